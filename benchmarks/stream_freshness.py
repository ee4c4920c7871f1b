"""Stream worker freshness and throughput: event produced -> value readable online.

Starts an embedded broker (``--broker``: noida, the default, or tansu) on a free port, topics
with 3 partitions, and ONE stream worker process (``python -m fraud_platform.tools.stream_worker``)
maintaining every stream group,
against the real Redis at 127.0.0.1:6379 (keys under a unique prefix, deleted afterwards).

1. Throughput: a backlog of events is produced first; ``worker_events_per_s`` = backlog /
   (time from the worker's first applied batch to the backlog fully applied).
2. Freshness, per rate: events produced at a constant rate with event_time = now; for every
   20th transaction the time from its produce call until its ``user_txn_velocity_v1`` row (or
   a later one) is in Redis (``lib/streaming/freshness``, polled every 5 ms) is recorded:
   ``freshness_p50_ms``/``p99_ms``; per second of the phase (``freshness_p99_ms_by_second``:
   level when the worker keeps up, growing when it falls behind), the rate the generator
   reached and the events not yet applied when it finished.
3. ``mismatches``: every online row of every stream group against ``compute_feature_group``
   over all events produced (must be 0).

    python benchmarks/stream_freshness.py            # rates 1k, 5k, 10k events/s, 10 s each, 20k backlog
    python benchmarks/stream_freshness.py --quick    # one rate (300/s, 10 s), 10k backlog
    python benchmarks/stream_freshness.py --broker tansu   # on a broker that waits like Kafka
    python benchmarks/stream_freshness.py --rates 10000 --seconds 30   # kept up with? (by second)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Producer  # noqa: E402

from fraud_platform.lib.contracts.events import encode_event, event_key  # noqa: E402
from fraud_platform.lib.features.catalog import FEATURE_GROUPS, USER_TXN_VELOCITY  # noqa: E402
from fraud_platform.lib.features.online.layout import online_key, to_micros  # noqa: E402
from fraud_platform.lib.kafka.admin import admin_config, ensure_topics  # noqa: E402
from fraud_platform.lib.storage.redis_connection import unlink_matching  # noqa: E402
from fraud_platform.lib.streaming.freshness import FreshnessProbe  # noqa: E402
from fraud_platform.lib.streaming.health import heartbeat_key  # noqa: E402
from fraud_platform.lib.streaming.verify import online_mismatches  # noqa: E402
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker  # noqa: E402
from tests.integration.streaming.events import random_events  # noqa: E402

REDIS_URL = os.environ.get("STREAM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SAMPLE_EVERY = 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Run:
    def __init__(self, bootstrap: str, prefix: str, folder: Path) -> None:
        self.bootstrap, self.prefix, self.folder = bootstrap, prefix, folder
        self.topics = {"transactions": f"{prefix}txn", "account_events": f"{prefix}acc"}
        self.sent: dict[str, list[dict]] = {}
        self.client = redis.Redis.from_url(REDIS_URL)
        self.producer = Producer({**admin_config(bootstrap), "linger.ms": 2})
        self.seq = 0

    def events(self, n: int, users: int) -> list[tuple[str, dict]]:
        self.seq += 1
        now = datetime.now(UTC)
        return random_events(
            self.seq,
            f"{self.prefix}{self.seq}-",
            n,
            start=now,
            span=timedelta(seconds=n),
            users=users,
        )

    def send(self, topic: str, event: dict) -> None:
        self.producer.produce(self.topics[topic], encode_event(event), key=event_key(topic, event))
        self.sent.setdefault(topic, []).append(event)

    def applied_events(self) -> int:
        return int(self.client.hget(heartbeat_key(f"{self.prefix}group"), "events") or 0)


def _constant_rate(run: Run, rate: int, seconds: float, users: int) -> dict:
    """One phase at ``rate``: freshness of the sampled rows, overall and by second of the
    phase; the rate the generator reached; the events not yet applied when it finished."""
    events = run.events(int(rate * seconds), users)
    probe = FreshnessProbe(run.client)
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    start = time.perf_counter()
    for i in range(0, len(events), per_tick):
        target = start + (i // per_tick) * tick
        while time.perf_counter() < target:
            time.sleep(0.0005)
        for topic, event in events[i : i + per_tick]:
            event["event_time"] = datetime.now(UTC)
            run.send(topic, event)
            if (
                topic == "transactions"
                and event["transaction_id"].endswith("0")
                and (int(event["transaction_id"].rsplit("t", 1)[1]) % SAMPLE_EVERY == 0)
            ):
                key = online_key(USER_TXN_VELOCITY, event["user_id"])
                probe.watch(key, to_micros(event["event_time"]))
        run.producer.poll(0)
    run.producer.flush(30)
    produced_s = time.perf_counter() - start
    behind = sum(len(v) for v in run.sent.values()) - run.applied_events()
    freshness, unseen = probe.stop(grace_s=30)
    return {
        "rate": rate,
        "events": len(events),
        "produced_per_s": round(len(events) / produced_s),
        "samples": len(freshness),
        # sampled rows not visible 30 s after the last event was produced (not in p99)
        "samples_not_visible_after_30s": unseen,
        "freshness_p50_ms": round(_pct(freshness, 0.5), 1),
        "freshness_p99_ms": round(_pct(freshness, 0.99), 1),
        # kept up with: level from second to second; falling behind: growing
        "freshness_p99_ms_by_second": [
            round(_pct(b, 0.99)) if b else None for b in probe.by_second(start)
        ],
        "events_unapplied_at_end": behind,
    }


def _profile(n: int = 20_000, batch: int = 2_000) -> None:
    """Where the worker's time goes: the processor applied in-process to ``n`` events."""
    import cProfile
    import io
    import pstats

    from fraud_platform.lib.streaming.processor import StreamProcessor, apply_records

    prefix = f"sp{uuid.uuid4().hex[:8]}-"
    client = redis.Redis.from_url(REDIS_URL)
    processor = StreamProcessor(client, FEATURE_GROUPS, store_prefix=f"bench:{prefix}")
    events = random_events(
        1,
        prefix,
        n,
        start=datetime.now(UTC) - timedelta(hours=2),
        span=timedelta(hours=2),
        users=2000,
    )
    profiler = cProfile.Profile()
    client.config_resetstat()  # a private redis-server: commandstats of this run only
    redis_cpu = _redis_cpu_seconds(client)
    started = time.perf_counter()
    try:
        profiler.enable()
        for i in range(0, n, batch):
            by_topic: dict[str, list[dict]] = {}
            for topic, event in events[i : i + batch]:
                by_topic.setdefault(topic, []).append(event)
            apply_records(processor, by_topic)
        profiler.disable()
    finally:
        unlink_matching(client, f"*{prefix}*")
    seconds = time.perf_counter() - started
    redis_cpu = _redis_cpu_seconds(client) - redis_cpu
    stats = client.info("commandstats")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())
    # Lua's redis.call()s are counted per command (EVALSHA's time includes them)
    calls = {k.removeprefix("cmdstat_"): v["calls"] / n for k, v in stats.items()}
    print(json.dumps({k: round(v, 2) for k, v in sorted(calls.items()) if v >= 0.01}))
    print(
        json.dumps(
            {
                "events": n,
                "batch": batch,
                "events_per_s": round(n / seconds),
                "redis_cpu_us_per_event": round(redis_cpu / n * 1e6, 1),
            }
        )
    )


def _redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", type=int, nargs="*", help="events/s (default 1000 5000 10000)")
    parser.add_argument("--backlog", type=int, help="events produced before the worker starts")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each rate's phase")
    parser.add_argument(
        "--broker",
        choices=("noida", "tansu"),
        default="noida",
        help="the Kafka-protocol stand-in: noida answers every fetch at once (an idle consumer"
        " and noida spin ~0.9 of a core between them); tansu waits like Kafka",
    )
    parser.add_argument(
        "--apply-interval", type=float, help="the worker's least seconds between applications"
    )
    parser.add_argument(
        "--commit-interval", type=float, help="the worker's checkpoint interval, s (its default)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only: cProfile of the worker's processing (in-process, no broker), top 15, and"
        " Redis calls and CPU per event (resets the server's commandstats)",
    )
    args = parser.parse_args()
    if args.profile:
        _profile()
        return
    rates = args.rates or ([300] if args.quick else [1000, 5000, 10000])
    # enough for several applications: the drain rate runs from the first one applied
    backlog = args.backlog or (10_000 if args.quick else 20_000)
    users = 1000 if args.quick else 10_000
    folder = Path(tempfile.mkdtemp(prefix="stream_bench_"))
    spec = BrokerSpec(args.broker, _free_port(), folder / "broker")
    prefix = f"sb{uuid.uuid4().hex[:8]}-"
    start_broker(spec)
    worker = None
    run = Run(spec.bootstrap, prefix, folder)
    results: dict = {"rates": []}
    try:
        ensure_topics(spec.bootstrap, {n: 3 for n in run.topics.values()}, retention_ms=3_600_000)
        for topic, event in run.events(backlog, users):  # spread over `backlog` s, an hour ago
            event["event_time"] -= timedelta(seconds=backlog + 60)
            run.send(topic, event)
        run.producer.flush(60)
        command = [
            sys.executable,
            "-m",
            "fraud_platform.tools.stream_worker",
            "--bootstrap",
            spec.bootstrap,
            "--redis-url",
            REDIS_URL,
            "--state-dir",
            str(folder / "state"),
            "--group",
            f"{prefix}group",
            "--store-prefix",
            f"bench:{prefix}",
        ]
        for contract, name in run.topics.items():
            command += ["--topic", f"{contract}={name}"]
        if args.commit_interval is not None:
            command += ["--commit-interval", str(args.commit_interval)]
        if args.apply_interval is not None:
            command += ["--apply-interval", str(args.apply_interval)]
        worker = subprocess.Popen(
            command, cwd=ROOT, stdout=(folder / "worker.log").open("wb"), stderr=subprocess.STDOUT
        )
        first = None
        deadline = time.monotonic() + 600
        cpu_first = None
        while time.monotonic() < deadline:
            applied = run.applied_events()
            if first is None and applied > 0:
                cpu_first = _cpu_seconds(worker.pid)
                first = (time.perf_counter(), applied)
            if applied >= backlog:
                break
            time.sleep(0.01)
        drained = time.perf_counter()
        cpu_drained = _cpu_seconds(worker.pid)
        assert first is not None, (folder / "worker.log").read_text()[-2000:]
        # one application took the whole backlog: no rate between two observations
        assert first[1] < backlog, f"the {backlog}-event backlog applied at once: raise --backlog"
        worker_rate = (backlog - first[1]) / max(drained - first[0], 1e-9)
        # CPU seconds of the worker per drained event: less noisy than the rate on a shared box
        cpu_us = (
            None
            if cpu_first is None or cpu_drained is None
            else round((cpu_drained - cpu_first) / max(backlog - first[1], 1) * 1e6, 1)
        )
        print(
            f"backlog {backlog} events: worker {worker_rate:,.0f} events/s, {cpu_us} CPU us/event"
        )
        for rate in rates:
            row = _constant_rate(run, rate, args.seconds, users)
            print(json.dumps(row))
            results["rates"].append(row)
        total = sum(len(v) for v in run.sent.values())
        deadline = time.monotonic() + 900
        while run.applied_events() < total and time.monotonic() < deadline:
            time.sleep(0.1)
        compared, mismatches, details = online_mismatches(run.client, FEATURE_GROUPS, run.sent)
        for line in details:
            print("mismatch:", line)
        last = results["rates"][-1]
        results.update(
            rate=last["rate"],
            events=sum(len(v) for v in run.sent.values()),
            freshness_p50_ms=last["freshness_p50_ms"],
            freshness_p99_ms=last["freshness_p99_ms"],
            worker_events_per_s=round(worker_rate),
            worker_cpu_us_per_event=cpu_us,
            rows_compared=compared,
            mismatches=mismatches,
            broker=args.broker,
            note=f"one worker process, 3 partitions, {args.broker} broker, shared 2-core machine",
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(30)
        unlink_matching(run.client, f"*{prefix}*")
        stop_broker(spec)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
