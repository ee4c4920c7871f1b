"""``publish``: replay a simulation into Kafka, in event-time order across the three topics."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    EVENT_TIME_FIELD,
    LABELS,
    TRANSACTIONS,
)
from fraud_platform.lib.kafka.producer import event_messages, produce
from fraud_platform.lib.simulation.engine import Simulation

PROGRESS_EVERY = 5_000


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


def merged_window(
    simulation: Simulation, since: datetime | None = None, until: datetime | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(topic, event)`` of the three topics with time in ``[since, until)``, oldest first:
    what ``publish`` produces, in its order."""
    return _merged(_window(simulation, since, until))


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
    Flushes before returning; raises ``ProduceFailed`` if any message was not delivered.
    Returns the number of messages delivered per topic.
    """
    streams = _window(simulation, since, until)
    total = sum(len(s) for s in streams)

    def reporting() -> Iterator[tuple[str, dict[str, Any]]]:
        for sent, item in enumerate(_merged(streams), start=1):
            yield item
            if progress is not None and sent % PROGRESS_EVERY == 0:
                progress(sent, total)

    delivered = produce(bootstrap_servers, event_messages(reporting()))
    if progress is not None:
        progress(total, total)
    return {topic: delivered.get(topic, 0) for topic in simulation.events_by_topic()}


def publish_chunks(
    chunks: Iterable[Simulation],
    bootstrap_servers: str,
    *,
    until: datetime | None = None,
    since: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """``publish`` for consecutive chunks of one simulation (``simulate_chunks``), through one
    producer: only one chunk is in memory at a time. ``progress`` gets the number of events
    handed to the producer after each chunk. Every chunk is consumed, also those after
    ``until`` (a caller may collect them on the way)."""
    topics = (TRANSACTIONS, ACCOUNT_EVENTS, LABELS)

    def ordered() -> Iterator[tuple[str, dict[str, Any]]]:
        sent = 0
        for chunk in chunks:
            streams = _window(chunk, since, until)
            yield from _merged(streams)
            sent += sum(len(s) for s in streams)
            if progress is not None:
                progress(sent)

    delivered = produce(bootstrap_servers, event_messages(ordered()))
    return {topic: delivered.get(topic, 0) for topic in topics}
