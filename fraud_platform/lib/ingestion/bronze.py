"""Exactly-once ingestion of Kafka topics into bronze Delta tables.

Layout: the bronze table of a topic is ``bronze/{topic}`` in the Delta store (schema
``bronze_schema(topic)``: the validated contract fields plus ``_topic, _partition, _offset,
_ingested_at``); events that break their contract go to the one dead-letter table
``bronze/dead_letter`` (``DEAD_LETTER_SCHEMA``) with the reason and the raw payload.
Both tables are created empty when missing, so downstream readers always find them.

The Delta log is the truth about what was ingested, never the broker:

* Each micro-batch of a topic is ONE append commit to its bronze table. That commit carries, for
  every partition of the topic, a Delta application transaction
  ``app_id = "fraud_platform.bronze.{topic}.{partition}"`` whose ``version`` is the next Kafka
  offset to read. Rows and positions therefore become visible atomically, together.
* Before reading, the position of a partition is ``transaction_version(app_id)`` of the bronze
  table (None: start at the partition's low watermark). The batch is bounded: it reads up to the
  high watermarks seen at its start and never waits for more.
* Rejects of the batch are appended to the dead-letter table BEFORE the bronze commit, in one
  commit carrying its own application transactions
  ``"fraud_platform.dead_letter.{topic}.{partition}"`` = (offset of the last reject written) + 1.
  Rejects below that version are skipped when the same offsets are read again.
  Crash after the dead-letter commit but before the bronze commit: the bronze position did not
  move, the next run reads the same offsets again, writes the good events to bronze once and
  skips the rejects already in the dead-letter table. Crash before the dead-letter commit: nothing
  was written, the batch is simply redone. The reverse order (bronze first) could lose the rejects
  of a batch whose bronze commit succeeded. So every offset ends up exactly once in exactly one of
  the two tables.
* Both commits are made on the snapshot the positions were read from: a concurrent ingestion of
  the same topic fails with a Delta commit conflict (same application id) instead of duplicating.
* Kafka consumer-group offsets are committed after the Delta commit for lag monitoring only.

Reading the bounded range from the Delta positions is ``lib/kafka/reader.py``. Offsets the broker
no longer has are never skipped silently: a high watermark below the recorded position (broker
reset, topic recreated) raises ``BrokerOffsetsWentBackwards``; a recorded position below the low
watermark (retention removed events before they were ingested) is skipped to the low watermark,
logged as a warning and recorded in the result and in the commit metadata.

The event contract of a topic defaults to its name; ``contract=`` maps prefixed or test topic
names onto ``transactions`` / ``account_events`` / ``labels``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer
from deltalake import DeltaTable

from fraud_platform.lib.contracts.events import (
    DEAD_LETTER_SCHEMA,
    EVENT_DATE_COLUMN,
    EVENT_TIME_FIELD,
    bronze_schema,
)
from fraud_platform.lib.ingestion.batch_validation import validate_batch
from fraud_platform.lib.kafka.reader import (
    KafkaReadError,
    ReadLimits,
    commit_consumer_group,
    consumer_config,
    kafka_watermarks,
    read_range,
    start_positions,
)
from fraud_platform.lib.storage.delta import DeltaStore, commit, recorded_versions
from fraud_platform.names import DEAD_LETTER_TABLE, bronze_table

METADATA_KEY = "fraud_platform.ingest"
ARROW_CHUNK = 50_000  # messages validated together (columnar) while building the micro-batch
_MAX_PROBED_PARTITIONS = 10_000


@dataclass
class IngestResult:
    """What one ``ingest_topic`` call did. Offsets are next-offset-to-read per partition."""

    topic: str
    accepted: int
    rejected: int
    offsets_before: dict[int, int]
    offsets_after: dict[int, int]
    delta_version: int | None
    lag: dict[int, int]
    elapsed_s: float
    skipped: dict[int, tuple[int, int]] = field(default_factory=dict)
    event_dates: tuple[date, date] | None = None
    """First and last event date (bronze partition) among the accepted rows."""

    @property
    def read(self) -> int:
        return self.accepted + self.rejected

    @property
    def behind(self) -> int:
        return sum(self.lag.values())


class IngestionIncomplete(KafkaReadError):
    """Events known to be in Kafka were left unread: the run must not look successful."""


# --------------------------------------------------------------------------------------------
# Tables and Delta state


def bronze_app_id(topic: str, partition: int) -> str:
    return f"fraud_platform.bronze.{topic}.{partition}"


def dead_letter_app_id(topic: str, partition: int) -> str:
    return f"fraud_platform.dead_letter.{topic}.{partition}"


def ensure_bronze_tables(
    topic: str, store: DeltaStore, contract: str | None = None
) -> tuple[DeltaTable, DeltaTable]:
    """Open the bronze table of ``topic`` and the dead-letter table, creating them if missing."""
    bronze = store.open_or_create(
        bronze_table(topic),
        bronze_schema(contract or topic),
        partition_by=[EVENT_DATE_COLUMN],
        name=f"bronze_{topic}",
    )
    dead = store.open_or_create(DEAD_LETTER_TABLE, DEAD_LETTER_SCHEMA, name="bronze_dead_letter")
    return bronze, dead


def _recorded_positions(table: DeltaTable, app_id: Callable[[int], str]) -> dict[int, int]:
    """Positions of partitions 0, 1, ... (every bronze commit records all partitions)."""
    positions: dict[int, int] = {}
    for partition in range(_MAX_PROBED_PARTITIONS):
        version = table.transaction_version(app_id(partition))
        if version is None:
            break
        positions[partition] = version
    return positions


def committed_offsets(topic: str, store: DeltaStore) -> dict[int, int]:
    """Next offset to ingest per partition, from the bronze table's Delta log ({} if none)."""
    if not store.exists(bronze_table(topic)):
        return {}
    return positions_at(store.open(bronze_table(topic)), topic)


def positions_at(table: DeltaTable, topic: str) -> dict[int, int]:
    """Next offset to ingest per partition as of ``table``'s version (a bronze table)."""
    return _recorded_positions(table, lambda p: bronze_app_id(topic, p))


# --------------------------------------------------------------------------------------------
# Building the micro-batch


class _Batch:
    """Validated rows as Arrow record batches, and rejects, of one micro-batch.

    Raw values are buffered and validated ``ARROW_CHUNK`` at a time by ``validate_batch``
    (columnar; same outcome as ``validate_event`` on each). ``accepted`` and ``rejects`` are
    complete after ``finish()``.
    """

    def __init__(self, topic: str, contract: str, now: datetime) -> None:
        self.topic = topic
        self.contract = contract
        self.now = now
        self.schema = bronze_schema(contract)
        self.payloads: list[bytes | None] = []
        self.partitions: list[int] = []
        self.offsets: list[int] = []
        self.chunks: list[pa.RecordBatch] = []
        self.rejects: list[tuple[int, int, bytes | None, str]] = []
        self.accepted = 0
        self.event_dates: tuple[date, date] | None = None

    def add(self, partition: int, offset: int, payload: bytes | None) -> None:
        self.payloads.append(payload)
        self.partitions.append(partition)
        self.offsets.append(offset)
        if len(self.payloads) >= ARROW_CHUNK:
            self._flush()

    def finish(self) -> None:
        """Validate what is still buffered."""
        self._flush()

    def _flush(self) -> None:
        if not self.payloads:
            return
        payloads, partitions, offsets = self.payloads, self.partitions, self.offsets
        self.payloads, self.partitions, self.offsets = [], [], []
        records, indices, rejects = validate_batch(self.contract, payloads, self.now)
        for index, reason in rejects:
            self.rejects.append((partitions[index], offsets[index], payloads[index], reason))
        n = len(indices)
        if not n:
            return
        take = pa.array(indices, pa.int64())
        columns = [records.column(i) for i in range(records.num_columns)]
        columns += [
            pa.repeat(pa.scalar(self.topic, pa.string()), n),
            pa.array(partitions, type=pa.int32()).take(take),
            pa.array(offsets, type=pa.int64()).take(take),
            pa.repeat(pa.scalar(self.now, self.schema.field("_ingested_at").type), n),
            pc.cast(records.column(EVENT_TIME_FIELD[self.contract]), pa.date32()),
        ]
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self.chunks.extend(table.to_batches())
        self.accepted += n
        low, high = pc.min_max(table.column(EVENT_DATE_COLUMN)).values()
        first, last = low.as_py(), high.as_py()
        if self.event_dates is not None:
            first, last = min(first, self.event_dates[0]), max(last, self.event_dates[1])
        self.event_dates = (first, last)

    def bronze_table(self) -> pa.Table:
        self.finish()
        return pa.Table.from_batches(self.chunks, schema=self.schema)

    def dead_letter_table(self, skip_below: dict[int, int]) -> pa.Table:
        """Rejects not yet in the dead-letter table (offset >= its recorded version)."""
        rows = [r for r in self.rejects if r[1] >= skip_below.get(r[0], -1)]
        return pa.table(
            {
                "topic": pa.array([self.topic] * len(rows), pa.string()),
                "partition": pa.array([r[0] for r in rows], pa.int32()),
                "offset": pa.array([r[1] for r in rows], pa.int64()),
                "raw_payload": pa.array([r[2] for r in rows], pa.binary()),
                "reason": pa.array([r[3] for r in rows], pa.string()),
                "rejected_at": pa.array([self.now] * len(rows), DEAD_LETTER_SCHEMA.field(5).type),
            },
            schema=DEAD_LETTER_SCHEMA,
        )


# --------------------------------------------------------------------------------------------
# Committing


def _commit_dead_letters(
    dead: DeltaTable, topic: str, batch: _Batch, metadata: dict[str, str]
) -> None:
    if not batch.rejects:
        return
    app_ids = {dead_letter_app_id(topic, p): p for p in {r[0] for r in batch.rejects}}
    written = recorded_versions(dead, app_ids)
    table = batch.dead_letter_table({app_ids[app]: v for app, v in written.items()})
    if table.num_rows == 0:
        return
    last: dict[int, int] = {}
    for partition, offset in zip(
        table.column("partition").to_pylist(), table.column("offset").to_pylist(), strict=True
    ):
        last[partition] = max(last.get(partition, -1), offset + 1)
    transactions = {dead_letter_app_id(topic, p): v for p, v in last.items()}
    commit(dead, table, transactions=transactions, metadata=metadata)


def _commit_bronze(
    bronze: DeltaTable,
    topic: str,
    table: pa.Table,
    positions: dict[int, int],
    metadata: dict[str, str],
) -> int:
    transactions = {bronze_app_id(topic, p): v for p, v in positions.items()}
    return commit(bronze, table, transactions=transactions, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Entry point


def ingest_topic(
    topic: str,
    *,
    bootstrap: str,
    store: DeltaStore,
    max_events: int = 1_000_000,
    poll_timeout_s: float = 2.0,
    stall_timeout_s: float = ReadLimits.stall_timeout_s,
    deadline_s: float = ReadLimits.deadline_s,
    group_id: str = "fraud_platform_bronze",
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    contract: str | None = None,
) -> IngestResult:
    """Ingest the events of ``topic`` not yet in bronze (at most ``max_events``), exactly once.

    Reads up to the high watermarks seen at the start (``ReadLimits``: ``poll_timeout_s`` for
    partitions with nothing listed, ``stall_timeout_s`` without a message while events are
    waiting, ``deadline_s`` in all). Raises ``IngestionIncomplete`` when events were waiting and
    none could be read. ``now`` is the ingestion time (``_ingested_at``, ``rejected_at``, and the
    reference for the future-event-time check). ``contract`` names the event contract of the
    topic (default: the topic name; set it when topic names carry a prefix). ``progress``
    receives the number of events read so far. See the module docstring for the guarantees.
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    limits = ReadLimits(poll_timeout_s, stall_timeout_s, deadline_s)
    bronze, dead = ensure_bronze_tables(topic, store, contract)
    marks = kafka_watermarks(topic, bootstrap)
    recorded = _recorded_positions(bronze, lambda p: bronze_app_id(topic, p))
    parts, skipped = start_positions(topic, recorded, marks)
    batch = _Batch(topic, contract or topic, now)
    consumer = Consumer(consumer_config(bootstrap, group_id))
    try:
        read_range(topic, consumer, parts, batch, max_events, limits, progress)
        batch.finish()
        before = {p: part.start for p, part in parts.items()}
        after = {p: part.position for p, part in parts.items()}
        version: int | None = bronze.version()
        if batch.accepted or batch.rejects or after != recorded:
            metadata = _commit_metadata(topic, before, after, batch, skipped)
            _commit_dead_letters(dead, topic, batch, metadata)
            version = _commit_bronze(bronze, topic, batch.bronze_table(), after, metadata)
            commit_consumer_group(consumer, topic, after)
    finally:
        consumer.close()
    result = IngestResult(
        topic=topic,
        accepted=batch.accepted,
        rejected=len(batch.rejects),
        offsets_before=before,
        offsets_after=after,
        delta_version=version,
        lag={p: max((part.bound or 0) - part.position, 0) for p, part in parts.items()},
        elapsed_s=time.monotonic() - started,
        skipped=skipped,
        event_dates=batch.event_dates,
    )
    if result.read == 0 and result.behind:
        raise IngestionIncomplete(
            f"topic {topic!r}: {result.behind} events waiting in Kafka (per partition "
            f"{result.lag}) and none read in {result.elapsed_s:.0f} s (no message for "
            f"{stall_timeout_s:.0f} s); the broker is not serving the backlog"
        )
    return result


def ingest_backlog(
    topic: str,
    *,
    bootstrap: str,
    store: DeltaStore,
    max_events: int = 1_000_000,
    deadline_s: float = ReadLimits.deadline_s,
    stall_timeout_s: float = ReadLimits.stall_timeout_s,
    progress: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> IngestResult:
    """Micro-batches of ``ingest_topic`` (one Delta commit each) until bronze reached the high
    watermarks seen at the start; raises ``IngestionIncomplete`` when events are still behind at
    ``deadline_s`` (the batches committed so far stay: a re-run continues from them)."""
    started = time.monotonic()
    results: list[IngestResult] = []
    while True:
        remaining = deadline_s - (time.monotonic() - started)
        done = sum(r.read for r in results)
        result = ingest_topic(
            topic,
            bootstrap=bootstrap,
            store=store,
            max_events=max_events,
            deadline_s=max(remaining, 1.0),
            stall_timeout_s=stall_timeout_s,
            progress=None if progress is None else (lambda n, done=done: progress(done + n)),
            **kwargs,
        )
        results.append(result)
        if not result.behind or result.read < max_events:
            break
        if time.monotonic() - started >= deadline_s:
            break
    total = _combined(topic, results, time.monotonic() - started)
    if total.behind:
        raise IngestionIncomplete(
            f"topic {topic!r}: {total.behind} events still behind in Kafka (per partition "
            f"{total.lag}) after {total.elapsed_s:.0f} s (deadline {deadline_s:.0f} s); "
            f"{total.read} were committed to bronze and a re-run continues from there"
        )
    return total


def _combined(topic: str, results: list[IngestResult], elapsed_s: float) -> IngestResult:
    dates = [r.event_dates for r in results if r.event_dates is not None]
    return IngestResult(
        topic=topic,
        accepted=sum(r.accepted for r in results),
        rejected=sum(r.rejected for r in results),
        offsets_before=results[0].offsets_before,
        offsets_after=results[-1].offsets_after,
        delta_version=results[-1].delta_version,
        lag=results[-1].lag,
        elapsed_s=elapsed_s,
        skipped={p: r for result in results for p, r in result.skipped.items()},
        event_dates=(min(d[0] for d in dates), max(d[1] for d in dates)) if dates else None,
    )


def _commit_metadata(
    topic: str,
    before: dict[int, int],
    after: dict[int, int],
    batch: _Batch,
    skipped: dict[int, tuple[int, int]],
) -> dict[str, str]:
    return {
        METADATA_KEY: json.dumps(
            {
                "topic": topic,
                "offsets_before": before,
                "offsets_after": after,
                "accepted": batch.accepted,
                "rejected": len(batch.rejects),
                "skipped_expired": {p: list(r) for p, r in skipped.items()},
            },
            sort_keys=True,
        )
    }
