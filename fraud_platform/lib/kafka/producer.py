"""The one Kafka produce helper, used by the simulator, the benchmarks and the tests.

``produce`` sends messages, waits while librdkafka's queue is full, flushes, and raises
``ProduceFailed`` unless every message was acknowledged. Callers that need to know where each
message landed (the exactly-once tests) pass ``on_delivery`` and get one ``Delivery`` per
message. ``Producer`` is the same thing for callers that flush several times on one client.
``Producer.offer`` is the non-blocking variant for request paths (the decision log): it never
waits for room in librdkafka's bounded queue, it says no.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import confluent_kafka

from fraud_platform.lib.contracts.events import encode_event, event_key

PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 200_000,
    "acks": "all",
    "enable.idempotence": True,
}
FLUSH_TIMEOUT_S = 120.0
_QUEUE_FULL_WAIT_S = 0.1
_UNASSIGNED = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the partitioner picks by key


class Message(NamedTuple):
    """One message to send; ``partition=None`` lets the key (or the client) choose."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    partition: int | None = None


@dataclass(frozen=True)
class Delivery:
    """The broker's answer for one message: where it landed, or why not (``error``).

    ``index`` is the message's position among those sent through the same ``Producer``.
    """

    index: int
    topic: str
    partition: int
    offset: int
    error: str | None


class ProduceFailed(RuntimeError):
    """Some messages were not acknowledged by the broker."""


def event_messages(events: Iterable[tuple[str, dict[str, Any]]]) -> Iterator[Message]:
    """``(topic, event)`` pairs as messages: the wire encoding, keyed per the topic's contract."""
    for topic, event in events:
        yield Message(topic, encode_event(event), event_key(topic, event))


class Producer:
    """A confluent-kafka producer with ``PRODUCER_CONFIG`` (``config`` overrides it) that counts
    acknowledged messages per topic and remembers failures until ``flush``."""

    def __init__(
        self,
        bootstrap: str,
        config: Mapping[str, Any] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        settings = {"bootstrap.servers": bootstrap, **PRODUCER_CONFIG, **(config or {})}
        self._client = confluent_kafka.Producer(settings)
        self._on_delivery = on_delivery
        self._sent = 0
        self._settled = 0  # acknowledged or failed
        self.delivered: Counter[str] = Counter()
        self.failures: list[str] = []

    def _acknowledged(self, err: Any, msg: Any) -> None:
        self._settled += 1
        if err is None:
            self.delivered[msg.topic()] += 1
        else:
            self.failures.append(f"{msg.topic()}: {err}")

    def _reporter(self, index: int, report: Callable[[Delivery], None]) -> Callable[..., None]:
        def acknowledged(err: Any, msg: Any) -> None:
            self._acknowledged(err, msg)
            error = None if err is None else str(err)
            report(Delivery(index, msg.topic(), msg.partition(), msg.offset(), error))

        return acknowledged

    def send(self, messages: Iterable[Message]) -> None:
        """Queue ``messages`` in order, serving delivery reports while the local queue is full.

        The hot loop of publishing: names are bound locally, per message one ``produce`` call.
        """
        produce, poll = self._client.produce, self._client.poll
        report, callback = self._on_delivery, self._acknowledged
        index = self._sent
        for topic, value, key, partition in messages:
            if report is not None:
                callback = self._reporter(index, report)
            target = _UNASSIGNED if partition is None else partition
            while True:
                try:
                    produce(topic, value, key, target, on_delivery=callback)
                    break
                except BufferError:
                    poll(_QUEUE_FULL_WAIT_S)
                except confluent_kafka.KafkaException as exc:
                    # refused before queueing (e.g. a partition the cached metadata lacks;
                    # confluent-kafka 2.12 raises here what 2.16 reported by callback): a
                    # failed message like any other, so flush raises ProduceFailed
                    self.failures.append(f"{topic}: {exc.args[0] if exc.args else exc}")
                    self._settled += 1
                    if report is not None:
                        report(Delivery(index, topic, target, -1, str(exc)))
                    break
            poll(0)
            index += 1
            self._sent = index

    def offer(
        self, topic: str, value: bytes, key: bytes | None, on_delivery: Callable[..., None]
    ) -> bool:
        """Queue one message without waiting; False when librdkafka's queue is full.

        ``on_delivery(err, msg)`` is librdkafka's own callback, served by ``poll``.
        """
        try:
            self._client.produce(topic, value, key, on_delivery=on_delivery)
        except BufferError:
            return False
        return True

    def poll(self, timeout_s: float) -> int:
        """Serve delivery reports, waiting up to ``timeout_s`` for one (GIL released)."""
        return self._client.poll(timeout_s)

    def queued(self) -> int:
        """Messages in librdkafka's queue not yet acknowledged (or failed)."""
        return len(self._client)

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> dict[str, int]:
        """Wait for every queued message; returns the acknowledged count per topic so far.

        Raises ``ProduceFailed`` if messages are still queued after ``timeout_s`` or failed.
        """
        if self._client.flush(timeout_s):
            # flush's own count includes librdkafka's pending protocol requests, not only messages
            undelivered = self._sent - self._settled
            raise ProduceFailed(f"{undelivered} messages still undelivered after {timeout_s}s")
        if self.failures:
            failures, self.failures = self.failures, []
            raise ProduceFailed(f"{len(failures)} messages failed, first: {failures[0]}")
        return dict(self.delivered)


def produce(
    bootstrap: str,
    messages: Iterable[Message],
    *,
    config: Mapping[str, Any] | None = None,
    on_delivery: Callable[[Delivery], None] | None = None,
    flush_timeout_s: float = FLUSH_TIMEOUT_S,
) -> dict[str, int]:
    """Send ``messages`` in order and flush; returns the acknowledged count per topic.

    Raises ``ProduceFailed`` unless every message was acknowledged.
    """
    producer = Producer(bootstrap, config, on_delivery)
    producer.send(messages)
    return producer.flush(flush_timeout_s)
