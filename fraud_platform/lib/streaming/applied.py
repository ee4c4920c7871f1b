"""Wait until a consumer group has applied every message published before a given one.

The real-time demo publishes the held-out days about 3,000 times faster than they happened, so
a second of stream freshness would hide most of an hour of event time from each lookup. A deployment
running at the real rate sees, at a transaction, every earlier event of its entities (they are
minutes apart, freshness is under a second). ``AppliedBarrier`` lets the replay score a
transaction only once the stream worker has committed (so applied: its sink flushes before the
commit) every message published before it, which is what that deployment's lookup would see.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from fraud_platform.lib.kafka.admin import admin_config
from fraud_platform.lib.kafka.producer import Delivery

POLL_S = 0.01


class DeliveryFailed(RuntimeError):
    """A message before the awaited one was not acknowledged: it can never be applied."""


class AppliedBarrier:
    """``delivered`` is the producer's ``on_delivery``; ``wait_through(n)`` returns once the
    group has committed past every one of the first ``n`` messages sent through it."""

    def __init__(self, bootstrap: str, consumer_group: str, topics: Iterable[str]) -> None:
        self._topics = set(topics)
        self._consumer = Consumer(
            {
                **admin_config(bootstrap),
                "group.id": consumer_group,
                "client.id": f"applied-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
            }
        )
        self._where: dict[int, tuple[str, int, int]] = {}
        self._arrived = threading.Condition()
        self._next = 0  # messages folded into _needed so far
        self._needed: dict[tuple[str, int], int] = {}  # (topic, partition) -> last offset

    def delivered(self, delivery: Delivery) -> None:
        if delivery.error is not None:
            where = (delivery.topic, -1, -1)
        else:
            where = (delivery.topic, delivery.partition, delivery.offset)
        with self._arrived:
            self._where[delivery.index] = where
            self._arrived.notify_all()

    def wait_through(self, count: int, timeout_s: float = 60.0) -> float:
        """Block until the first ``count`` messages are committed by the group; returns the
        seconds waited. Raises ``TimeoutError`` past ``timeout_s``."""
        started = time.perf_counter()
        deadline = started + timeout_s
        with self._arrived:
            while self._next < count:
                where = self._where.pop(self._next, None)
                if where is None:
                    if not self._arrived.wait(max(0.0, deadline - time.perf_counter())):
                        raise TimeoutError(f"message {self._next} was never acknowledged")
                    continue
                topic, partition, offset = where
                if partition < 0:
                    raise DeliveryFailed(f"message {self._next} to {topic} failed")
                if topic in self._topics:
                    key = (topic, partition)
                    self._needed[key] = max(self._needed.get(key, -1), offset)
                self._next += 1
        needed = [TopicPartition(t, p) for t, p in self._needed]
        while needed:
            committed = self._consumer.committed(needed, timeout=10)
            needed = [
                TopicPartition(tp.topic, tp.partition)
                for tp in committed
                if tp.offset <= self._needed[(tp.topic, tp.partition)]
            ]
            if not needed:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(needed)} partitions not applied within {timeout_s} s")
            time.sleep(POLL_S)
        return time.perf_counter() - started

    def close(self) -> None:
        self._consumer.close()
