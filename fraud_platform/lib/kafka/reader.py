"""Reading a bounded range of offsets of a Kafka topic, from positions the caller recorded.

The caller (bronze ingestion) keeps the positions with its data, never in the broker: it asks
for the partitions' watermarks, picks where each partition starts (``start_positions``), and
``read_range`` delivers every message from there up to the high watermarks seen at the start into
a ``Sink``; it never waits for newer events, and it does not give up on events known to be
waiting before ``ReadLimits`` say so. ``commit_consumer_group`` mirrors the positions to
the consumer group afterwards, for lag monitoring only.

Offsets the broker no longer has are never skipped silently: a high watermark below the recorded
position (broker reset, topic recreated) raises ``BrokerOffsetsWentBackwards``; a recorded
position below the low watermark (retention removed events before they were read) is skipped to
the low watermark, logged as a warning and returned by ``start_positions``.

The consumer uses ``assign()`` at the recorded positions (no group membership, so no join delay
on tansu) with ``auto.offset.reset=error``: with ``earliest`` librdkafka silently re-reads from
the beginning when a position is out of range (checked on noida), which would hide a reset.

Broker quirk handled here: tansu's ListOffsets reports a high watermark that is too low (the base
offset of the last record batch + 1), while its fetch responses carry the right one. So the bound
of a partition is ``max(ListOffsets high, high watermark of the first fetch response)``, and
``kafka_end_offsets`` (ListOffsets only) may under-report on tansu.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from fraud_platform.lib.kafka.admin import admin_config

log = logging.getLogger(__name__)

CONSUME_CHUNK = 20_000  # messages per consume() call
_CONSUME_STEP_S = 0.2  # re-check the partitions' progress at least this often
_OUT_OF_RANGE = {KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE}


class KafkaReadError(RuntimeError):
    """A topic cannot be read safely from the recorded positions."""


class TopicNotFound(KafkaReadError):
    """The topic does not exist on the broker."""


class BrokerOffsetsWentBackwards(KafkaReadError):
    """Kafka's high watermark is below the position the caller recorded (broker reset/recreated)."""

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


class Sink(Protocol):
    """Where ``read_range`` puts each message it reads."""

    def add(self, partition: int, offset: int, payload: bytes | None) -> None: ...


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
# Reading a bounded range of offsets


@dataclass(frozen=True)
class ReadLimits:
    """When a bounded read gives up before reaching the high watermarks seen at its start.

    Never on idleness alone while events are known to be waiting: noida answers the first fetch
    of a backlog of 2.52M events after ~3.7 s (1.26M: 1.7-2.1 s), so a reader that stopped after
    2 s without a message read nothing of it, every time.
    """

    idle_timeout_s: float = 2.0
    """A partition with nothing listed beyond its position is done after this long without a
    fetch answer."""
    stall_timeout_s: float = 120.0
    """A read with partitions behind stops after this long without any message."""
    deadline_s: float = 600.0
    """A read stops after this long in all."""


@dataclass
class PartitionRange:
    """The offsets of one partition a read covers, and how far it got."""

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

    def __init__(self, consumer: Consumer, topic: str, parts: dict[int, PartitionRange]) -> None:
        self.consumer = consumer
        self.topic = topic
        self.parts = parts

    def pending(self) -> list[int]:
        return [p for p, part in self.parts.items() if not part.done]

    def run(
        self,
        sink: Sink,
        max_events: int,
        limits: ReadLimits,
        progress: Callable[[int], None] | None,
    ) -> int:
        """Read into ``sink`` until every partition reached its bound or ``max_events`` were read.

        A partition behind its high watermark is waited for up to ``limits.stall_timeout_s``
        without a message (a broker may answer the first fetch of a large backlog late) and
        ``limits.deadline_s`` in all; one with nothing listed is done after
        ``limits.idle_timeout_s`` without a fetch answer.
        """
        count = 0
        started = idle_since = time.monotonic()
        step_s = min(limits.idle_timeout_s, _CONSUME_STEP_S)
        while self.pending() and count < max_events:
            events = self.consumer.consume(
                num_messages=self._want(max_events - count), timeout=step_s
            )
            count += self._handle_all(events, sink, max_events - count)
            self._learn_bounds()
            now = time.monotonic()
            if now - started >= limits.deadline_s:
                log.warning("%s: read deadline of %.0f s reached", self.topic, limits.deadline_s)
                break
            if events:
                idle_since = now
                if progress is not None:
                    progress(count)
                continue
            behind = [p for p in self.pending() if self.parts[p].estimate() > 0]
            waited = now - idle_since
            if (behind and waited >= limits.stall_timeout_s) or (
                not behind and waited >= limits.idle_timeout_s
            ):
                if behind:
                    log.warning(
                        "%s: no message for %.0f s while partitions %s are behind",
                        self.topic, waited, behind,
                    )  # fmt: skip
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

    def _handle_all(self, events: list[Message], sink: Sink, budget: int) -> int:
        """Add the events within bounds to ``sink`` (at most ``budget``); returns how many.

        The hot loop of ingestion: per message only attribute reads and one ``sink.add``.
        """
        count = 0
        parts = self.parts
        add = sink.add
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
            raise KafkaReadError(
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


def start_positions(
    topic: str, recorded: dict[int, int], marks: dict[int, tuple[int, int]]
) -> tuple[dict[int, PartitionRange], dict[int, tuple[int, int]]]:
    """Where each partition starts, and the ranges retention removed before ingestion."""
    for partition, position in recorded.items():
        if partition not in marks and position > 0:
            raise BrokerOffsetsWentBackwards(topic, partition, position, 0)
    parts: dict[int, PartitionRange] = {}
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
        parts[partition] = PartitionRange(start=start, listed_high=high)
    return parts, skipped


def read_range(
    topic: str,
    consumer: Consumer,
    parts: dict[int, PartitionRange],
    sink: Sink,
    max_events: int,
    limits: ReadLimits,
    progress: Callable[[int], None] | None,
) -> int:
    """Assign the partitions at their starts and read them into ``sink``; returns the count."""
    consumer.assign([TopicPartition(topic, p, part.start) for p, part in parts.items()])
    return _Reader(consumer, topic, parts).run(sink, max_events, limits, progress)


def commit_consumer_group(consumer: Consumer, topic: str, positions: dict[int, int]) -> None:
    """Mirror the recorded positions to the consumer group, for lag monitoring only."""
    offsets = [TopicPartition(topic, p, v) for p, v in positions.items()]
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    except KafkaException as exc:
        log.warning(
            "could not commit consumer-group offsets of %s (monitoring only): %s", topic, exc
        )
