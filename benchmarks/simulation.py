"""Throughput of the simulator and of publishing it: simulate, encode, produce, measured apart.

    .venv/bin/python benchmarks/simulation.py [--quick] [--days N] [--users N] [--publish-chunks N]

Builds the world of ``--users`` (timed), simulates ``--days`` (default 21; ``--quick`` 7 days
x 2,000 users) a week at a time with ``simulate_chunks``, and encodes every event of each chunk
as the publisher does (merged by time, ``event_messages``), timing the two apart; only one chunk
is held, except the first ``--publish-chunks`` (default 1), which are then published to an
embedded noida broker (free port, temporary directory) through ``publish_chunks``: encode +
produce + flush. A year at N users is about 52 times a week's events: the JSON has the rates to
extrapolate with. Peak RSS is the process's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

from benchmarks._common import emit, free_port, peak_rss_mb
from fraud_platform.lib.kafka.producer import event_messages
from fraud_platform.lib.simulation.engine import Simulation, SimulationConfig, simulate_chunks
from fraud_platform.lib.simulation.publisher import merged_window, publish_chunks
from fraud_platform.lib.simulation.world import build_world
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker


def _events(chunk: Simulation) -> int:
    return len(chunk.transactions) + len(chunk.account_events) + len(chunk.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--days", type=int, default=21)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--publish-chunks", type=int, default=1)
    args = parser.parse_args()
    days, users = (7, 2_000) if args.quick else (args.days, args.users)
    config = SimulationConfig(days=days, users=users)

    started = time.perf_counter()
    build_world(config.seed, users, config.merchants)
    world_s = time.perf_counter() - started

    simulate_s = encode_s = 0.0
    events, week_events = 0, []
    kept: list[Simulation] = []
    chunks = simulate_chunks(config)
    while True:
        started = time.perf_counter()
        chunk = next(chunks, None)
        simulate_s += time.perf_counter() - started
        if chunk is None:
            break
        events += _events(chunk)
        week_events.append(_events(chunk))
        started = time.perf_counter()
        for _ in event_messages(merged_window(chunk)):
            pass
        encode_s += time.perf_counter() - started
        if len(kept) < args.publish_chunks:
            kept.append(chunk)
        print(f"chunk {len(week_events)}: {week_events[-1]:,} events", flush=True)

    spec = BrokerSpec("noida", free_port(), Path(tempfile.mkdtemp(prefix="bench-simulation-")))
    start_broker(spec)
    try:
        started = time.perf_counter()
        publish_chunks(kept, spec.bootstrap)
        publish_s = time.perf_counter() - started
    finally:
        stop_broker(spec)
    published = sum(_events(chunk) for chunk in kept)
    emit(
        {
            "days": days,
            "users": users,
            "events": events,
            "events_per_chunk": week_events,  # a week each (the last may be shorter)
            "world_s": round(world_s, 1),
            "simulate_events_per_s": round(events / simulate_s),
            "encode_events_per_s": round(events / encode_s),
            "published_events": published,
            "publish_events_per_s": round(published / publish_s),
            "peak_rss_mb": round(peak_rss_mb()),
        }
    )


if __name__ == "__main__":
    main()
