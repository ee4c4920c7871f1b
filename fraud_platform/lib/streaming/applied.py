"""Wait until a consumer group has applied every message published before a given one.

The real-time demo publishes the held-out days about 3,000 times faster than they happened, so
a second of stream freshness would hide most of an hour of event time from each lookup. A deployment
running at the real rate sees, at a transaction, every earlier event of its entities (they are
minutes apart, freshness is under a second). ``AppliedBarrier`` lets the replay score a
transaction only once the stream worker has applied every message published before it (the
worker records, per partition, the offset after the last record it applied: ``health.beat``),
which is what that deployment's lookup would see. Not the committed offsets: the worker applies
records as they arrive and commits them only every ``commit_interval``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import redis

from fraud_platform.lib.kafka.producer import Delivery
from fraud_platform.lib.streaming.health import applied_key, applied_offsets

POLL_S = 0.01


class DeliveryFailed(RuntimeError):
    """A message before the awaited one was not acknowledged: it can never be applied."""


class AppliedBarrier:
    """``delivered`` is the producer's ``on_delivery``; ``wait_through(n)`` returns once the
    group has applied every one of the first ``n`` messages sent through it."""

    def __init__(self, client: redis.Redis, consumer_group: str, topics: Iterable[str]) -> None:
        self._topics = set(topics)
        self._client = client
        self._group = consumer_group
        # offsets recorded against an earlier broker (one that was reset) would let every wait
        # pass: the worker records each partition again as it applies the messages awaited
        client.delete(applied_key(consumer_group))
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
        """Block until the first ``count`` messages are applied by the group; returns the
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
        needed = list(self._needed)
        while needed:
            applied = applied_offsets(self._client, self._group, needed)
            needed = [
                key
                for key, offset in zip(needed, applied, strict=True)
                if offset <= self._needed[key]
            ]
            if not needed:
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{len(needed)} partitions not applied within {timeout_s} s")
            time.sleep(POLL_S)
        return time.perf_counter() - started
