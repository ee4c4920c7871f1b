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

Offsets the broker no longer has are never skipped silently: a high watermark below the recorded
position (broker reset, topic recreated) raises ``BrokerOffsetsWentBackwards``; a recorded
position below the low watermark (retention removed events before they were ingested) is skipped
to the low watermark, logged as a warning and recorded in the result and in the commit metadata.

The consumer uses ``assign()`` at the Delta positions (no group membership, so no join delay
on tansu) with ``auto.offset.reset=error``: with ``earliest`` librdkafka silently re-reads from
the beginning when a position is out of range (checked on noida), which would hide a reset.

The event contract of a topic defaults to its name; ``contract=`` maps prefixed or test topic
names onto ``transactions`` / ``account_events`` / ``labels``.

Broker quirk handled here: tansu's ListOffsets reports a high watermark that is too low (the base
offset of the last record batch + 1), while its fetch responses carry the right one. So the bound
of a partition is ``max(ListOffsets high, high watermark of the first fetch response)``, and
``kafka_end_offsets`` (ListOffsets only) may under-report on tansu.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from deltalake import DeltaTable

from fraud_platform.lib.contracts.events import (
    DEAD_LETTER_SCHEMA,
    EVENT_DATE_COLUMN,
    EVENT_TIME_FIELD,
    bronze_schema,
)
from fraud_platform.lib.ingestion.batch_validation import validate_batch
from fraud_platform.lib.kafka.admin import admin_config
from fraud_platform.lib.storage.delta import DeltaStore, commit, recorded_versions

log = logging.getLogger(__name__)

DEAD_LETTER_TABLE = "bronze/dead_letter"
METADATA_KEY = "fraud_platform.ingest"
CONSUME_CHUNK = 20_000  # messages per consume() call
ARROW_CHUNK = 50_000  # messages validated together (columnar) while building the micro-batch
_MAX_PROBED_PARTITIONS = 10_000
_CONSUME_STEP_S = 0.2  # re-check the partitions' progress at least this often
_OUT_OF_RANGE = {KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE}


class BronzeIngestError(RuntimeError):
    """Bronze ingestion cannot proceed safely."""


class TopicNotFound(BronzeIngestError):
    """The topic does not exist on the broker."""


class BrokerOffsetsWentBackwards(BronzeIngestError):
    """Kafka's high watermark is below the position bronze recorded (broker reset/recreated)."""

    def __init__(self, topic: str, partition: int, committed: int, high_watermark: int) -> None:
        self.topic = topic
        self.partition = partition
        self.committed = committed
        self.high_watermark = high_watermark
        super().__init__(
            f"topic {topic!r} partition {partition}: broker high watermark {high_watermark} is "
            f"below the offset {committed} already ingested into bronze; the broker was reset or "
            "the topic recreated. Refusing to skip or re-read: restore the broker, or archive the "
            "bronze table and dead-letter rows of this topic before ingesting again."
        )


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


# --------------------------------------------------------------------------------------------
# Tables and Delta state


def bronze_table(topic: str) -> str:
    return f"bronze/{topic}"


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
    return _recorded_positions(store.open(bronze_table(topic)), lambda p: bronze_app_id(topic, p))


# --------------------------------------------------------------------------------------------
# Kafka state


def kafka_watermarks(
    topic: str, bootstrap: str, timeout_s: float = 10
) -> dict[int, tuple[int, int]]:
    """``{partition: (low, high)}`` from ListOffsets. Raises ``TopicNotFound``.

    Asks for the metadata of all topics: a metadata request naming the topic would create it on
    brokers that auto-create topics (noida and tansu both do).
    """
    admin = AdminClient(admin_config(bootstrap, timeout_s))
    metadata = admin.list_topics(timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        reason = metadata.error if metadata is not None else "the broker does not list it"
        raise TopicNotFound(f"topic {topic!r} not found at {bootstrap}: {reason}")
    partitions = sorted(metadata.partitions)
    marks: dict[int, list[int]] = {p: [0, 0] for p in partitions}
    for index, spec in ((0, OffsetSpec.earliest()), (1, OffsetSpec.latest())):
        request = {TopicPartition(topic, p): spec for p in partitions}
        for tp, future in admin.list_offsets(request, request_timeout=timeout_s).items():
            marks[tp.partition][index] = future.result().offset
    return {p: (low, high) for p, (low, high) in marks.items()}


def kafka_end_offsets(topic: str, bootstrap: str, timeout_s: float = 10) -> dict[int, int]:
    """High watermark per partition (ListOffsets; under-reported by tansu, see module doc)."""
    return {p: high for p, (_, high) in kafka_watermarks(topic, bootstrap, timeout_s).items()}


def consumer_config(bootstrap: str, group_id: str) -> dict[str, Any]:
    """Consumer settings that behave on Kafka, noida and tansu.

    ``auto.offset.reset=error``: an offset the broker no longer has must surface as an error,
    never as a silent jump (``earliest`` would re-read, ``latest`` would skip).
    ``receive.message.max.bytes``: noida ignores ``fetch.max.bytes`` and answers one fetch with
    the whole backlog (~111 MB for 300k transactions); above librdkafka's default 100 MB the
    response is dropped and ingestion fails with _BAD_MSG. Brokers that honour the fetch limits
    never send that much, so raising the ceiling costs nothing there.
    """
    return {
        "receive.message.max.bytes": 2_000_000_000,
        "bootstrap.servers": bootstrap,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",
        "enable.partition.eof": True,
        "session.timeout.ms": 6000,
        "fetch.wait.max.ms": 100,
        "socket.connection.setup.timeout.ms": 10_000,
        "logger": logging.getLogger("fraud_platform.librdkafka"),
    }


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
# Reading a bounded range of offsets


@dataclass
class _Partition:
    start: int  # first offset of this batch (the recorded position, or the low watermark)
    listed_high: int  # high watermark from ListOffsets at the start
    position: int = 0  # next offset to read
    bound: int | None = None  # where this batch stops; known after the first fetch response
    done: bool = False

    def __post_init__(self) -> None:
        self.position = self.start

    def estimate(self) -> int:
        return max((self.bound if self.bound is not None else self.listed_high) - self.position, 0)


class _Reader:
    """Reads each partition from its start up to its bound; never waits for newer events."""

    def __init__(self, consumer: Consumer, topic: str, parts: dict[int, _Partition]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.parts = parts

    def pending(self) -> list[int]:
        return [p for p, part in self.parts.items() if not part.done]

    def run(
        self,
        batch: _Batch,
        max_events: int,
        poll_timeout_s: float,
        progress: Callable[[int], None] | None,
    ) -> int:
        """Read into ``batch``; stops when every partition reached its bound, after
        ``max_events`` events, or when nothing arrived for ``poll_timeout_s``."""
        count = 0
        step_s = min(poll_timeout_s, _CONSUME_STEP_S)
        idle_since = time.monotonic()
        while self.pending() and count < max_events:
            events = self.consumer.consume(
                num_messages=self._want(max_events - count), timeout=step_s
            )
            count += self._handle_all(events, batch, max_events - count)
            self._learn_bounds()
            if events:
                idle_since = time.monotonic()
                if progress is not None:
                    progress(count)
            elif time.monotonic() - idle_since >= poll_timeout_s:
                break
        self._finish()
        return count

    def _want(self, remaining: int) -> int:
        """Events to ask for: the offsets left plus one end-of-partition event per partition.

        Asking for no more than will come lets ``consume`` return without waiting its timeout.
        """
        pending = self.pending()
        expected = sum(self.parts[p].estimate() for p in pending)
        return max(1, min(expected, remaining, CONSUME_CHUNK) + len(pending))

    def _set_bound(self, partition: int) -> None:
        part = self.parts[partition]
        if part.bound is not None:
            return
        marks = self.consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), cached=True
        )
        if not marks or marks[1] is None or marks[1] < 0:
            return  # no fetch response for this partition yet
        high = marks[1]
        part.bound = max(part.listed_high, high)
        if part.bound < part.start:
            raise BrokerOffsetsWentBackwards(self.topic, partition, part.start, part.bound)
        self._maybe_done(partition)

    def _learn_bounds(self) -> None:
        for partition in self.pending():
            self._set_bound(partition)

    def _maybe_done(self, partition: int) -> None:
        part = self.parts[partition]
        if part.bound is not None and part.position >= part.bound and not part.done:
            part.done = True
            self.consumer.pause([TopicPartition(self.topic, partition)])

    def _handle_all(self, events: list[Message], batch: _Batch, budget: int) -> int:
        """Add the events within bounds to ``batch`` (at most ``budget``); returns how many.

        The hot loop of ingestion: per message only attribute reads and one ``batch.add``.
        """
        count = 0
        parts = self.parts
        add = batch.add
        for message in events:
            if count >= budget:
                break
            partition = message.partition()
            part = parts.get(partition)
            if part is None or part.done:
                continue
            error = message.error()
            if error is not None:
                self._handle_error(partition, message.offset(), error)
                continue
            if part.bound is None:
                self._set_bound(partition)
            offset = message.offset()
            if part.bound is not None and offset >= part.bound:
                part.position = max(part.position, offset)  # everything below was delivered
                self._maybe_done(partition)
                continue
            add(partition, offset, message.value())
            part.position = offset + 1
            count += 1
            if part.bound is not None and part.position >= part.bound:
                self._maybe_done(partition)
        return count

    def _handle_error(self, partition: int, offset: int, error: KafkaError) -> None:
        part = self.parts[partition]
        if error.code() == KafkaError._PARTITION_EOF:
            # Everything below ``offset`` (the fetch's high watermark) was delivered.
            if part.bound is None:
                part.bound = max(part.listed_high, offset)
            part.position = max(part.position, min(offset, part.bound))
            if part.bound < part.start:
                raise BrokerOffsetsWentBackwards(self.topic, partition, part.start, part.bound)
            self._maybe_done(partition)
            return
        if error.code() in _OUT_OF_RANGE:
            if part.start > part.listed_high:
                raise BrokerOffsetsWentBackwards(
                    self.topic, partition, part.start, part.listed_high
                )
            raise BronzeIngestError(
                f"topic {self.topic!r} partition {partition}: offset {part.position} is no longer "
                f"on the broker ({error.str()}); retry to skip to the low watermark"
            )
        if error.fatal() or not error.retriable():
            raise KafkaException(error)
        log.warning("transient consumer error on %s[%s]: %s", self.topic, partition, error.str())

    def _finish(self) -> None:
        """Give every partition a bound (for the lag figures).

        A partition no fetch answered yet (the batch ended first) was not read from: its position
        is unchanged and the next batch checks it. ListOffsets alone is not trusted to detect a
        reset here, because tansu under-reports it.
        """
        self._learn_bounds()
        for part in self.parts.values():
            if part.bound is None:
                part.bound = max(part.listed_high, part.position)


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


def _commit_consumer_group(consumer: Consumer, topic: str, positions: dict[int, int]) -> None:
    """Mirror the Delta positions to the consumer group, for lag monitoring only."""
    offsets = [TopicPartition(topic, p, v) for p, v in positions.items()]
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        log.warning(
            "could not commit consumer-group offsets of %s (monitoring only): %s", topic, exc
        )


# --------------------------------------------------------------------------------------------
# Entry point


def _start_positions(
    topic: str, recorded: dict[int, int], marks: dict[int, tuple[int, int]]
) -> tuple[dict[int, _Partition], dict[int, tuple[int, int]]]:
    """Where each partition starts, and the ranges retention removed before ingestion."""
    for partition, position in recorded.items():
        if partition not in marks and position > 0:
            raise BrokerOffsetsWentBackwards(topic, partition, position, 0)
    parts: dict[int, _Partition] = {}
    skipped: dict[int, tuple[int, int]] = {}
    for partition, (low, high) in sorted(marks.items()):
        position = recorded.get(partition)
        start = low if position is None else max(position, low)
        if position is not None and position < low:
            skipped[partition] = (position, low)
            log.warning(
                "topic %s partition %s: offsets %s..%s expired on the broker before ingestion",
                topic, partition, position, low - 1,
            )  # fmt: skip
        parts[partition] = _Partition(start=start, listed_high=high)
    return parts, skipped


def _read(
    topic: str,
    consumer: Consumer,
    parts: dict[int, _Partition],
    batch: _Batch,
    max_events: int,
    poll_timeout_s: float,
    progress: Callable[[int], None] | None,
) -> None:
    consumer.assign([TopicPartition(topic, p, part.start) for p, part in parts.items()])
    _Reader(consumer, topic, parts).run(batch, max_events, poll_timeout_s, progress)
    batch.finish()


def ingest_topic(
    topic: str,
    *,
    bootstrap: str,
    store: DeltaStore,
    max_events: int = 1_000_000,
    poll_timeout_s: float = 2.0,
    group_id: str = "fraud_platform_bronze",
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    contract: str | None = None,
) -> IngestResult:
    """Ingest the events of ``topic`` not yet in bronze (at most ``max_events``), exactly once.

    ``now`` is the ingestion time (``_ingested_at``, ``rejected_at``, and the reference for the
    future-event-time check). ``contract`` names the event contract of the topic (default: the
    topic name; set it when topic names carry a prefix). ``progress`` receives the number of
    events read so far. See the module docstring for the guarantees.
    """
    started = time.monotonic()
    now = now or datetime.now(UTC)
    bronze, dead = ensure_bronze_tables(topic, store, contract)
    marks = kafka_watermarks(topic, bootstrap)
    recorded = _recorded_positions(bronze, lambda p: bronze_app_id(topic, p))
    parts, skipped = _start_positions(topic, recorded, marks)
    batch = _Batch(topic, contract or topic, now)
    consumer = Consumer(consumer_config(bootstrap, group_id))
    try:
        _read(topic, consumer, parts, batch, max_events, poll_timeout_s, progress)
        before = {p: part.start for p, part in parts.items()}
        after = {p: part.position for p, part in parts.items()}
        version: int | None = bronze.version()
        if batch.accepted or batch.rejects or after != recorded:
            metadata = _commit_metadata(topic, before, after, batch, skipped)
            _commit_dead_letters(dead, topic, batch, metadata)
            version = _commit_bronze(bronze, topic, batch.bronze_table(), after, metadata)
            _commit_consumer_group(consumer, topic, after)
    finally:
        consumer.close()
    return IngestResult(
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
