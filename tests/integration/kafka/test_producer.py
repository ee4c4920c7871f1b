"""The one produce helper against real brokers (noida and tansu): keyed partitioning, one
delivery report per message at its acknowledged offset, and loud failures."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from fraud_platform.lib.contracts.events import TRANSACTIONS, encode_event, event_key
from fraud_platform.lib.kafka.producer import (
    Delivery,
    Message,
    ProduceFailed,
    Producer,
    produce,
)
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.tools.brokers import BrokerSpec

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 1, tzinfo=UTC)


def test_produce_reports_each_delivery_and_keeps_a_users_events_on_one_partition(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("produce", partitions=3)
    events = simulate(SimulationConfig(days=2, users=8, seed=11, start=START)).transactions[:60]
    messages = [Message(topic, encode_event(e), event_key(TRANSACTIONS, e)) for e in events]
    reports: list[Delivery] = []

    counts = produce(kafka_broker.bootstrap, messages, on_delivery=reports.append)

    assert counts == {topic: len(events)}
    assert sorted(r.index for r in reports) == list(range(len(events)))
    assert all(r.error is None and r.topic == topic for r in reports)
    partitions_of_user: dict[str, set[int]] = {}
    for report in reports:
        user = events[report.index]["user_id"]
        partitions_of_user.setdefault(user, set()).add(report.partition)
    assert all(len(found) == 1 for found in partitions_of_user.values()), partitions_of_user
    assert len({r.partition for r in reports}) > 1  # the keys spread over the partitions
    for partition in {r.partition for r in reports}:
        offsets = sorted(r.offset for r in reports if r.partition == partition)
        assert offsets == list(range(len(offsets)))  # a fresh topic: contiguous from 0


def test_producer_flushes_batches_and_counts_across_them(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("batches", partitions=2)
    reports: list[Delivery] = []
    producer = Producer(kafka_broker.bootstrap, on_delivery=reports.append)

    producer.send(Message(topic, b"%d" % i, partition=i % 2) for i in range(4))
    assert producer.flush(30) == {topic: 4}
    producer.send(Message(topic, b"%d" % i, partition=i % 2) for i in range(4, 7))
    assert producer.flush(30) == {topic: 7}

    placed = {r.index: (r.partition, r.offset) for r in reports}
    assert placed == {0: (0, 0), 1: (1, 0), 2: (0, 1), 3: (1, 1), 4: (0, 2), 5: (1, 2), 6: (0, 3)}


def test_produce_raises_when_a_message_is_refused(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("refused", partitions=1)
    reports: list[Delivery] = []
    messages = [Message(topic, b"ok"), Message(topic, b"nowhere", partition=5)]

    with pytest.raises(ProduceFailed, match="1 messages failed, first: " + topic):
        produce(kafka_broker.bootstrap, messages, on_delivery=reports.append, flush_timeout_s=30)
    assert [r.error is None for r in sorted(reports, key=lambda r: r.index)] == [True, False]


def test_produce_raises_when_messages_stay_undelivered(free_tcp_port: int) -> None:
    config = {"message.timeout.ms": 60_000, "logger": logging.getLogger("test.librdkafka")}
    with pytest.raises(ProduceFailed, match="2 messages still undelivered after 1.0s"):
        produce(
            f"127.0.0.1:{free_tcp_port}",
            [Message("t", b"a"), Message("t", b"b")],
            config=config,
            flush_timeout_s=1.0,
        )
