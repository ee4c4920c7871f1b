"""``AppliedBarrier`` (the real-time replay's gate) against real brokers and Redis: it returns
once the consumer group has applied every message published before the awaited one, per
partition (the offsets the worker records with ``health.beat``), and not before."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import redis

from fraud_platform.lib.kafka.admin import admin_config
from fraud_platform.lib.kafka.producer import Delivery, Message, Producer
from fraud_platform.lib.streaming.applied import AppliedBarrier
from fraud_platform.lib.streaming.health import applied_key, beat, heartbeat_key
from fraud_platform.tools.brokers import BrokerSpec
from tests.redis_server import redis_db_url


def test_waits_for_every_partition_to_be_applied_past_the_earlier_messages(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str]
) -> None:
    topic, other = make_topic("applied", partitions=3), make_topic("ignored")
    group = f"g_{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_db_url(0))
    beat(client, group, 0, {(topic, p): 10_000 for p in range(3)})  # an earlier broker's
    barrier = AppliedBarrier(client, group, [topic])
    deliveries: list[Delivery] = []

    def delivered(delivery: Delivery) -> None:
        deliveries.append(delivery)
        barrier.delivered(delivery)

    producer = Producer(
        kafka_broker.bootstrap, {**admin_config(kafka_broker.bootstrap)}, on_delivery=delivered
    )
    producer.send(
        Message(other if i == 5 else topic, b"x", partition=None if i == 5 else i % 3)
        for i in range(30)
    )
    producer.flush()
    assert barrier.wait_through(0) < 1.0  # nothing before the first message

    before = [d for d in deliveries if d.index < 20 and d.topic == topic]
    needed: dict[tuple[str, int], int] = {}
    for d in before:
        needed[(d.topic, d.partition)] = max(needed.get((d.topic, d.partition), -1), d.offset + 1)
    assert len(needed) == 3

    done = threading.Event()
    waited: list[float] = []

    def wait() -> None:
        waited.append(barrier.wait_through(20, timeout_s=60))
        done.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    lagging = (topic, 1)
    beat(client, group, 19, {k: o - (1 if k == lagging else 0) for k, o in needed.items()})
    assert not done.wait(1.0), "returned while partition 1 still lagged by one message"
    beat(client, group, 1, {lagging: needed[lagging]})
    assert done.wait(30), "did not return once every partition was applied"
    assert waited and waited[0] >= 1.0
    client.delete(applied_key(group), heartbeat_key(group))
