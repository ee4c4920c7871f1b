"""How far behind the stream worker is: consumer lag (Kafka), the age of its last batch (a
heartbeat the worker writes to Redis at every application) and the offsets it applied."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import redis
from confluent_kafka import Consumer, TopicPartition

from fraud_platform.lib.kafka.admin import admin_config


def heartbeat_key(consumer_group: str) -> str:
    return f"fps:heartbeat:{consumer_group}"


def applied_key(consumer_group: str) -> str:
    return f"fps:applied:{consumer_group}"


def beat(
    client: redis.Redis,
    consumer_group: str,
    events: int,
    applied: Mapping[tuple[str, int], int] | None = None,
) -> None:
    """Record that a batch of ``events`` was applied now; ``applied``: per (broker topic,
    partition) the offset after the last record applied. The worker applies records before
    its checkpoint commits them, so these run ahead of the committed offsets."""
    key = heartbeat_key(consumer_group)
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, "last_batch_ms", int(time.time() * 1000))
    pipe.hincrby(key, "events", events)
    if applied:
        # overwritten, not only raised: a worker replaying a partition it took over moves the
        # offset back for a moment, which only makes a reader wait longer
        members = {f"{topic}:{partition}": offset for (topic, partition), offset in applied.items()}
        pipe.zadd(applied_key(consumer_group), members)  # type: ignore[arg-type]
    pipe.execute()


def applied_offsets(
    client: redis.Redis, consumer_group: str, partitions: Sequence[tuple[str, int]]
) -> list[int]:
    """Per (broker topic, partition) the offset after the last record the group applied (-1:
    none)."""
    if not partitions:
        return []
    scores = client.zmscore(applied_key(consumer_group), [f"{t}:{p}" for t, p in partitions])
    return [-1 if score is None else int(score) for score in scores]


def last_batch_age_s(client: redis.Redis, consumer_group: str) -> float | None:
    """Seconds since the worker last applied a batch (None if it never did)."""
    value = client.hget(heartbeat_key(consumer_group), "last_batch_ms")
    return None if value is None else time.time() - int(value) / 1000


@dataclass(frozen=True)
class TopicLag:
    topic: str
    end_offset: int
    committed: int

    @property
    def lag(self) -> int:
        return max(self.end_offset - self.committed, 0)


def consumer_lag(bootstrap: str, consumer_group: str, topics: Iterable[str]) -> list[TopicLag]:
    """Events in ``topics`` not yet committed by ``consumer_group`` (no commit counts from the
    start of the partition), per topic."""
    consumer = Consumer(
        {
            **admin_config(bootstrap),
            "group.id": consumer_group,
            "client.id": f"lag-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )
    try:
        out = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            partitions = [TopicPartition(topic, p) for p in metadata.partitions]
            committed = consumer.committed(partitions, timeout=10)
            end = committed_total = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=10
                )
                end += high
                committed_total += tp.offset if tp.offset >= 0 else low
            out.append(TopicLag(topic, end, committed_total))
        return out
    finally:
        consumer.close()
