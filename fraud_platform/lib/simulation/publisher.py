"""``publish``: replay a simulation into Kafka, in event-time order across the three topics."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from fraud_platform.lib.contracts.events import EVENT_TIME_FIELD, LABELS, encode_event
from fraud_platform.lib.simulation.engine import Simulation

PRODUCER_CONFIG: dict[str, Any] = {
    "linger.ms": 20,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 200_000,
    "acks": "all",
    "enable.idempotence": True,
}
FLUSH_TIMEOUT_S = 120.0
PROGRESS_EVERY = 5_000


def _key(topic: str, event: dict[str, Any]) -> bytes:
    return (event["transaction_id"] if topic == LABELS else event["user_id"]).encode("utf-8")


Timed = tuple[datetime, int, str, dict[str, Any]]


def _window(
    simulation: Simulation, since: datetime | None, until: datetime | None
) -> list[list[Timed]]:
    """Per topic, the events whose time lies in ``[since, until)``, already sorted by time."""
    streams = []
    for order, (topic, events) in enumerate(simulation.events_by_topic().items()):
        field = EVENT_TIME_FIELD[topic]
        streams.append(
            [
                (event[field], order, topic, event)
                for event in events
                if (since is None or event[field] >= since)
                and (until is None or event[field] < until)
            ]
        )
    return streams


def _merged(streams: list[list[Timed]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for _, _, topic, event in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
        yield topic, event


def publish(
    simulation: Simulation,
    bootstrap_servers: str,
    *,
    until: datetime | None = None,
    since: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Produce the events with time in ``[since, until)`` to their topics, oldest first.

    Keys are the user id (transactions, account events) or the transaction id (labels).
    Flushes before returning; raises ``RuntimeError`` if any message was not delivered.
    Returns the number of messages delivered per topic.
    """
    from confluent_kafka import Producer

    streams = _window(simulation, since, until)
    total = sum(len(s) for s in streams)
    delivered = dict.fromkeys(simulation.events_by_topic(), 0)
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}: {err}")
        else:
            delivered[msg.topic()] += 1

    producer = Producer({"bootstrap.servers": bootstrap_servers, **PRODUCER_CONFIG})
    for sent, (topic, event) in enumerate(_merged(streams), start=1):
        while True:
            try:
                producer.produce(topic, key=_key(topic, event), value=encode_event(event),
                                 on_delivery=on_delivery)  # fmt: skip
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        if progress is not None and sent % PROGRESS_EVERY == 0:
            progress(sent, total)
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining:
        raise RuntimeError(f"{remaining} messages still undelivered after {FLUSH_TIMEOUT_S}s")
    if failures:
        raise RuntimeError(f"{len(failures)} messages failed, first: {failures[0]}")
    if progress is not None:
        progress(total, total)
    return delivered
