"""Exactly-once bronze ingestion under crashes and races, against real brokers (noida, tansu).

* An ingestion worker subprocess (``ingest_worker.py``) is SIGKILLed at random points while a
  producer keeps writing; afterwards bronze holds every valid event exactly once, the dead-letter
  table every reject exactly once, and the Delta positions equal the partitions' ends.
* Two ingestions start at the same moment on the same offsets: at least one commits, a loser
  fails with a Delta commit conflict, and nothing is duplicated or lost.

Every topic gets a few malformed events too (negative amount), so the dead-letter commit that
precedes the bronze commit is exercised as well.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from fraud_platform.lib.contracts.events import TRANSACTIONS, encode_event
from fraud_platform.lib.ingestion.bronze import (
    bronze_app_id,
    committed_offsets,
    dead_letter_app_id,
    ingest_topic,
)
from fraud_platform.lib.kafka.admin import admin_config, ensure_topics
from fraud_platform.lib.kafka.producer import Delivery, Message, Producer
from fraud_platform.lib.kafka.reader import kafka_end_offsets
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import DEAD_LETTER_TABLE, bronze_table
from fraud_platform.tools.brokers import BrokerSpec

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("ingest_worker.py")
PARTITIONS = 3
REJECT_EVERY = 97  # every 97th event breaks its contract (negative amount) -> dead letter
# What delta-rs (1.6) says when the loser's commit conflicts: the winner's commit carries the
# same application ids. (In the first round both also create the tables at once: the loser's
# create fails and it opens the winner's table, so "Metadata changed since last commit", from a
# second CREATE TABLE, must not appear.)
CONFLICTS = ("Concurrent transaction failed",)
STARTUP = "before the first ingest call (start-up)"
BETWEEN = "between two ingest calls"


# --------------------------------------------------------------------------------------------
# Producing


@dataclass
class Produced:
    """What the broker acknowledged: ``(partition, offset) -> transaction_id`` (None: reject)."""

    at: dict[tuple[int, int], str | None] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def valid_ids(self) -> list[str]:
        return [tid for tid in self.at.values() if tid is not None]

    def reject_positions(self) -> set[tuple[int, int]]:
        return {pos for pos, tid in self.at.items() if tid is None}

    def high_watermarks(self) -> dict[int, int]:
        highs = {p: 0 for p in range(PARTITIONS)}
        for partition, offset in self.at:
            highs[partition] = max(highs[partition], offset + 1)
        return highs


def transactions(count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` valid transactions with ids unique to this call."""
    start = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)
    events: list[dict[str, Any]] = []
    users = 300
    while len(events) < count:
        config = SimulationConfig(days=4, users=users, seed=seed, start=start)
        events = simulate(config).transactions
        users *= 2
    run = uuid.uuid4().hex[:8]
    return [{**event, "transaction_id": f"eo-{run}-{i}"} for i, event in enumerate(events[:count])]


def payloads(events: list[dict[str, Any]]) -> list[tuple[bytes, str | None]]:
    out: list[tuple[bytes, str | None]] = []
    for i, event in enumerate(events):
        if i % REJECT_EVERY == REJECT_EVERY - 1:
            out.append((encode_event({**event, "amount": -1.0}), None))
        else:
            out.append((encode_event(event), event["transaction_id"]))
    return out


def produce(
    bootstrap: str, topic: str, batches: list[list[tuple[bytes, str | None]]], pause_s: float,
    produced: Produced,
) -> None:  # fmt: skip
    """Produce the batches (round-robin over the partitions), ``pause_s`` apart, recording the
    acknowledged offset of every event."""
    tids = [tid for batch in batches for _, tid in batch]

    def delivered(report: Delivery) -> None:
        if report.error is not None:
            produced.errors.append(report.error)
        else:
            produced.at[(report.partition, report.offset)] = tids[report.index]

    config = {**admin_config(bootstrap), "linger.ms": 5, "enable.idempotence": False}
    producer = Producer(bootstrap, config, on_delivery=delivered)
    index = 0
    for number, batch in enumerate(batches):
        producer.send(
            Message(topic, payload, partition=(index + i) % PARTITIONS)
            for i, (payload, _) in enumerate(batch)
        )
        index += len(batch)
        producer.flush(30)
        if number < len(batches) - 1:
            time.sleep(pause_s)


# --------------------------------------------------------------------------------------------
# Reading the Delta tables


def bronze_rows(root: Path, topic: str) -> list[dict[str, Any]]:
    table = (
        DeltaStore(str(root))
        .open(bronze_table(topic))
        .to_pyarrow_table(columns=["transaction_id", "_partition", "_offset"])
    )
    return table.to_pylist()


def dead_positions(root: Path, topic: str) -> list[tuple[int, int]]:
    path = DeltaStore(str(root)).uri(DEAD_LETTER_TABLE)
    if not DeltaTable.is_deltatable(path):
        return []
    rows = DeltaTable(path).to_pyarrow_table(columns=["topic", "partition", "offset"]).to_pylist()
    return [(r["partition"], r["offset"]) for r in rows if r["topic"] == topic]


def check_exactly_once(root: Path, topic: str, produced: Produced, bootstrap: str) -> None:
    """Bronze == the valid events, dead letter == the rejects, each once; positions == ends."""
    assert not produced.errors, produced.errors
    rows = bronze_rows(root, topic)
    ids = [row["transaction_id"] for row in rows]
    duplicates = {tid: n for tid, n in Counter(ids).items() if n > 1}
    assert not duplicates, f"{len(duplicates)} transactions twice in bronze, e.g. {duplicates}"
    expected = produced.valid_ids()
    assert len(set(expected)) == len(expected)
    missing = set(expected) - set(ids)
    extra = set(ids) - set(expected)
    assert not missing and not extra, f"missing {len(missing)}, unexpected {len(extra)}"
    assert len(ids) == len(expected)
    # Every row sits at the offset its event was acknowledged at.
    for row in rows:
        assert produced.at[(row["_partition"], row["_offset"])] == row["transaction_id"]
    dead = dead_positions(root, topic)
    assert len(dead) == len(set(dead)), "a reject is twice in the dead-letter table"
    assert set(dead) == produced.reject_positions()
    highs = produced.high_watermarks()
    assert sum(highs.values()) == len(produced.at), "offsets are not contiguous"
    assert committed_offsets(topic, DeltaStore(str(root))) == highs
    listed = kafka_end_offsets(topic, bootstrap)
    # ListOffsets of tansu under-reports the high watermark (see lib/kafka/reader.py).
    assert all(listed[p] <= highs[p] for p in highs), (listed, highs)


def ingest_until_done(spec: BrokerSpec, topic: str, root: Path, produced: Produced) -> int:
    """Clean in-process ingestion until the Delta positions reach the partitions' ends."""
    highs = produced.high_watermarks()
    for calls in range(1, 50):
        ingest_topic(
            topic,
            bootstrap=spec.bootstrap,
            store=DeltaStore(str(root)),
            poll_timeout_s=1.0,
            group_id="exactly_once_test",
            contract=TRANSACTIONS,
        )
        if committed_offsets(topic, DeltaStore(str(root))) == highs:
            return calls
    raise AssertionError(
        f"not caught up: {committed_offsets(topic, DeltaStore(str(root)))} != {highs}"
    )


def new_topic(spec: BrokerSpec) -> str:
    topic = f"eo_{uuid.uuid4().hex[:10]}"
    ensure_topics(spec.bootstrap, {topic: PARTITIONS}, retention_ms=3_600_000)
    return topic


# --------------------------------------------------------------------------------------------
# The worker subprocess


def start_worker(
    spec: BrokerSpec, topic: str, root: Path, out: Path, *extra: str
) -> subprocess.Popen[bytes]:
    with open(out, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, str(WORKER), spec.bootstrap, topic, str(root), *extra],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def worker_lines(out: Path) -> list[tuple[str, dict[str, Any]]]:
    lines = []
    for line in out.read_text(errors="replace").splitlines():
        kind, _, rest = line.partition(" ")
        if kind in {"ready", "begin", "end", "error"}:
            lines.append((kind, json.loads(rest) if rest else {}))
    return lines


@dataclass
class DeltaState:
    bronze_version: int
    dead_version: int
    orphans: int  # data files no commit references (written by a commit that never happened)
    temp_commits: int  # commit files never renamed into the log
    bronze_positions: dict[int, int]
    dead_positions: dict[int, int]


def delta_state(root: Path, topic: str) -> DeltaState:
    versions, orphans, temps, positions = [], 0, 0, []
    for path, app_id in (
        (DeltaStore(str(root)).uri(bronze_table(topic)), bronze_app_id),
        (DeltaStore(str(root)).uri(DEAD_LETTER_TABLE), dead_letter_app_id),
    ):
        base = Path(path)
        if not DeltaTable.is_deltatable(path):
            versions.append(-1)
            positions.append({})
            orphans += len(list(base.glob("*.parquet"))) if base.exists() else 0
            continue
        table = DeltaTable(path)
        versions.append(table.version())
        referenced = {Path(uri).name for uri in table.file_uris()}
        orphans += sum(1 for f in base.glob("*.parquet") if f.name not in referenced)
        temps += sum(1 for f in (base / "_delta_log").iterdir() if "tmp" in f.name)
        found = {}
        for partition in range(PARTITIONS):
            version = table.transaction_version(app_id(topic, partition))
            if version is not None:
                found[partition] = version
        positions.append(found)
    return DeltaState(versions[0], versions[1], orphans, temps, positions[0], positions[1])


def classify_kill(
    before: DeltaState, after: DeltaState, lines: list[tuple[str, dict[str, Any]]]
) -> str:
    """Where the SIGKILL landed, as far as the worker's output and the Delta tables tell."""
    kinds = [kind for kind, _ in lines]
    if "begin" not in kinds:
        return STARTUP
    if kinds[-1] != "begin":
        return BETWEEN
    if any(after.dead_positions.get(p, 0) > v for p, v in after.bronze_positions.items()):
        if after.dead_version > before.dead_version:
            return "mid-commit: after the dead-letter commit, before the bronze commit"
    reported = [data["version"] for kind, data in lines if kind == "end"]
    last_seen = max(reported, default=before.bronze_version)
    if after.bronze_version > last_seen:
        return "after the bronze commit, before ingest_topic returned"
    if after.orphans > before.orphans or after.temp_commits > before.temp_commits:
        return "mid-commit: data files written, no commit"
    return "before any Delta write (opening tables, ListOffsets, reading Kafka)"


def race(
    spec: BrokerSpec, topic: str, root: Path, work: Path
) -> tuple[list[tuple[str, dict[str, Any]]], list[int]]:
    """Two ``--once`` workers, released together once both are ready; their last output lines
    and exit codes."""
    work.mkdir()
    go = work / "go"
    outs = [work / f"worker_{i}.out" for i in range(2)]
    extra = ("--once", "--go-file", str(go), "--max-events", "1000000")
    workers = [start_worker(spec, topic, root, out, *extra) for out in outs]
    try:
        deadline = time.monotonic() + 30
        while not all(worker_lines(out) for out in outs):
            assert time.monotonic() < deadline, "workers not ready"
            assert all(w.poll() is None for w in workers), [o.read_text() for o in outs]
            time.sleep(0.02)
        go.touch()
        codes = [worker.wait(60) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
    return [worker_lines(out)[-1] for out in outs], codes


# --------------------------------------------------------------------------------------------
# Tests


def test_exactly_once_survives_sigkill_at_random_points(
    kafka_broker: BrokerSpec, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(20261125)
    topic = new_topic(kafka_broker)
    root = tmp_path / "lake"
    events = payloads(transactions(4000, seed=5))
    batches = [events[i : i + 200] for i in range(0, len(events), 200)]
    produced = Produced()
    producer = threading.Thread(
        target=produce, args=(kafka_broker.bootstrap, topic, batches, 0.8, produced)
    )
    producer.start()

    outcomes: Counter[str] = Counter()
    commits_by_workers = 0
    durations: list[float] = []
    try:
        for run in range(20):
            before = delta_state(root, topic)
            out = tmp_path / f"worker_{run}.out"
            worker = start_worker(kafka_broker, topic, root, out)
            time.sleep(rng.uniform(0.2, 2.5))
            exited = worker.poll()
            worker.send_signal(signal.SIGKILL)
            worker.wait(30)
            lines = worker_lines(out)
            assert exited is None, f"worker exited by itself ({exited}): {out.read_text()}"
            errors = [data for kind, data in lines if kind == "error"]
            assert not errors, f"worker {run} failed: {errors}"
            after = delta_state(root, topic)
            commits_by_workers += max(after.bronze_version, 0) - max(before.bronze_version, 0)
            outcomes[classify_kill(before, after, lines)] += 1
            durations += [data["elapsed_s"] for kind, data in lines if kind == "end"]
    finally:
        producer.join(120)
    assert not producer.is_alive()
    final_calls = ingest_until_done(kafka_broker, topic, root, produced)

    check_exactly_once(root, topic, produced, kafka_broker.bootstrap)
    interrupted = sum(n for where, n in outcomes.items() if where not in (STARTUP, BETWEEN))
    print(
        f"\n[{kafka_broker.kind}] {len(produced.at)} events ({len(produced.reject_positions())} "
        f"rejects), 20 SIGKILLs, {commits_by_workers} bronze commits by killed workers, "
        f"{final_calls} final ingest call(s), {time.monotonic() - started:.1f} s; "
        f"completed ingest calls {len(durations)}, mean "
        f"{sum(durations) / max(len(durations), 1):.2f} s; "
        f"kills that interrupted a running ingest: {interrupted}"
    )
    for where, count in sorted(outcomes.items()):
        print(f"  {count:2d} x {where}")


def test_exactly_once_with_two_concurrent_ingests_on_the_same_offsets(
    kafka_broker: BrokerSpec, tmp_path: Path
) -> None:
    started = time.monotonic()
    topic = new_topic(kafka_broker)
    root = tmp_path / "lake"
    events = payloads(transactions(3 * 600, seed=9))
    produced = Produced()
    conflicts: list[str] = []
    for round_ in range(3):
        produce(
            kafka_broker.bootstrap, topic, [events[round_ * 600 : (round_ + 1) * 600]], 0,
            produced,
        )  # fmt: skip
        results, codes = race(kafka_broker, topic, root, tmp_path / f"race_{round_}")
        winners = [data for kind, data in results if kind == "end"]
        losers = [data for kind, data in results if kind == "error"]
        assert len(winners) + len(losers) == 2, results
        assert codes == [0 if kind == "end" else 1 for kind, _ in results]
        assert winners, f"round {round_}: both ingestions failed: {losers}"
        for loser in losers:
            assert loser["type"] == "CommitFailedError", loser
            assert any(reason in loser["message"] for reason in CONFLICTS), loser
            conflicts.append(f"{loser['module']}.{loser['type']}: {loser['message']}")
        if len(winners) == 2:  # no overlap: the second one read after the first committed
            assert winners[0]["before"] != winners[1]["before"] or not all(
                w["accepted"] for w in winners
            ), f"round {round_}: both committed the same offsets: {winners}"
        ingest_until_done(kafka_broker, topic, root, produced)
        check_exactly_once(root, topic, produced, kafka_broker.bootstrap)

    assert conflicts, "the two ingestions never raced (no round had a commit conflict)"
    print(
        f"\n[{kafka_broker.kind}] 3 races, {len(conflicts)} lost with a commit conflict, "
        f"{time.monotonic() - started:.1f} s; losers raised: {sorted(set(conflicts))}"
    )
