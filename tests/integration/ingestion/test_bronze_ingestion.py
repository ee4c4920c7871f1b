"""Kafka -> bronze Delta ingestion against real brokers (noida and tansu): exactly once, rejects
to the dead-letter table, multi-partition completeness, broker resets detected."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from fraud_platform.lib.contracts.events import (
    DEAD_LETTER_SCHEMA,
    TRANSACTIONS,
    bronze_schema,
    encode_event,
    validate_event,
)
from fraud_platform.lib.ingestion import bronze
from fraud_platform.lib.ingestion.bronze import (
    IngestResult,
    committed_offsets,
    ingest_topic,
)
from fraud_platform.lib.kafka.admin import (
    KafkaUnavailable,
    admin_config,
    check_kafka,
    ensure_topics,
)
from fraud_platform.lib.kafka.reader import (
    BrokerOffsetsWentBackwards,
    TopicNotFound,
    kafka_end_offsets,
)
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import DEAD_LETTER_TABLE, bronze_table
from fraud_platform.tools.brokers import (
    BrokerSpec,
    BrokerStartError,
    broker_status,
    start_broker,
    stop_broker,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
GROUP = "bronze_test"


def transaction(tid: str, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": 1,
        "transaction_id": tid,
        "event_time": NOW - timedelta(minutes=5),
        "user_id": "u_1",
        "card_id": "c_1",
        "merchant_id": "m_1",
        "merchant_category": "grocery",
        "amount": 12.5,
        "currency": "EUR",
        "channel": "ecommerce",
        "counterparty_id": None,
        "device_id": "d_1",
        "ip": "10.0.0.1",
        "country": "DE",
    }
    event.update(overrides)
    return event


def good_payloads(prefix: str, count: int) -> tuple[list[str], list[bytes]]:
    ids = [f"{prefix}-{i}" for i in range(count)]
    payloads = [encode_event(transaction(tid)) for tid in ids]
    for payload in payloads:
        validate_event(TRANSACTIONS, payload, NOW)  # the fixtures themselves are valid
    return ids, payloads


def ingest(spec: BrokerSpec, topic: str, root: Path, **kwargs: Any) -> IngestResult:
    kwargs.setdefault("poll_timeout_s", 1.0)
    return ingest_topic(
        topic,
        bootstrap=spec.bootstrap,
        store=DeltaStore(str(root)),
        group_id=GROUP,
        now=NOW,
        contract=TRANSACTIONS,
        **kwargs,
    )


def bronze_rows(root: Path, topic: str) -> list[dict[str, Any]]:
    return DeltaStore(str(root)).open(bronze_table(topic)).to_pyarrow_table().to_pylist()


def dead_rows(root: Path, topic: str) -> list[dict[str, Any]]:
    rows = DeltaStore(str(root)).open(DEAD_LETTER_TABLE).to_pyarrow_table().to_pylist()
    return [row for row in rows if row["topic"] == topic]


def delete_topic(bootstrap: str, topic: str) -> None:
    admin = AdminClient(admin_config(bootstrap))
    for future in admin.delete_topics([topic], operation_timeout=10).values():
        future.result()
    deadline = time.monotonic() + 20
    while topic in admin.list_topics(timeout=5).topics and time.monotonic() < deadline:
        time.sleep(0.1)


def test_check_kafka_fails_fast_on_closed_port(free_tcp_port: int) -> None:
    address = f"127.0.0.1:{free_tcp_port}"
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable, match=address):
        check_kafka(address, timeout_s=3)
    assert time.monotonic() - started < 10


def test_broker_start_is_idempotent(kafka_broker: BrokerSpec) -> None:
    status = broker_status(kafka_broker)
    assert status["running"] and status["reachable"]
    assert start_broker(kafka_broker) == status["pid"]
    check_kafka(kafka_broker.bootstrap)


def test_broker_lifecycle(kafka_broker: BrokerSpec, tmp_path: Path, free_tcp_port: int) -> None:
    clash = BrokerSpec(kafka_broker.kind, kafka_broker.port, tmp_path / "clash")
    with pytest.raises(BrokerStartError, match=str(kafka_broker.port)):
        start_broker(clash)

    spec = BrokerSpec(kafka_broker.kind, free_tcp_port, tmp_path / "own")
    pid = start_broker(spec)
    assert spec.pid_file.read_text().strip() == str(pid)
    assert broker_status(spec)["reachable"]
    assert stop_broker(spec) is True
    assert not spec.pid_file.exists()
    assert broker_status(spec) | {"pid": None} == {
        "kind": spec.kind, "pid": None, "running": False, "bootstrap": spec.bootstrap,
        "reachable": False,
    }  # fmt: skip
    assert stop_broker(spec) is False


def test_ingest_exactly_once(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = make_topic("tx", partitions=2)

    empty = ingest(kafka_broker, topic, tmp_path)
    assert (empty.accepted, empty.rejected) == (0, 0)
    assert DeltaStore(str(tmp_path)).open(bronze_table(topic)).schema().to_arrow() is not None
    assert bronze_rows(tmp_path, topic) == []
    assert dead_rows(tmp_path, topic) == []

    ids, payloads = good_payloads("a", 6)
    produce(topic, payloads, partitions=2)
    first = ingest(kafka_broker, topic, tmp_path)
    assert (first.accepted, first.rejected) == (6, 0)
    assert first.offsets_after == {0: 3, 1: 3} and first.lag == {0: 0, 1: 0}
    rows = bronze_rows(tmp_path, topic)
    assert sorted(r["transaction_id"] for r in rows) == sorted(ids)
    assert {(r["_topic"], r["_partition"]) for r in rows} == {(topic, 0), (topic, 1)}
    assert all(r["_ingested_at"] == NOW and r["schema_version"] == 1 for r in rows)
    assert committed_offsets(topic, DeltaStore(str(tmp_path))) == {0: 3, 1: 3}
    if kafka_broker.kind == "noida":  # tansu's ListOffsets under-reports (see reader docstring)
        assert kafka_end_offsets(topic, kafka_broker.bootstrap) == {0: 3, 1: 3}

    again = ingest(kafka_broker, topic, tmp_path)
    assert (again.accepted, again.rejected) == (0, 0)
    assert again.delta_version == first.delta_version  # no empty commit
    assert len(bronze_rows(tmp_path, topic)) == 6

    more_ids, more = good_payloads("b", 3)
    produce(topic, more, partitions=2)
    third = ingest(kafka_broker, topic, tmp_path)
    assert third.accepted == 3 and third.offsets_before == {0: 3, 1: 3}
    rows = bronze_rows(tmp_path, topic)
    assert sorted(r["transaction_id"] for r in rows) == sorted(ids + more_ids)
    assert len({(r["_partition"], r["_offset"]) for r in rows}) == len(rows) == 9

    consumer = Consumer({**admin_config(kafka_broker.bootstrap), "group.id": GROUP})
    try:
        committed = consumer.committed([TopicPartition(topic, p) for p in (0, 1)], timeout=10)
    finally:
        consumer.close()
    assert {tp.partition: tp.offset for tp in committed} == third.offsets_after


MALFORMED: list[tuple[bytes, str]] = [
    (b"{not json", "not valid JSON"),
    (encode_event(transaction("x", amount="12.50")), "field 'amount' must be a number"),
    (encode_event({k: v for k, v in transaction("x").items() if k != "user_id"}),
     "missing required field 'user_id'"),
    (encode_event(transaction("x", amount=-5)), "must be > 0"),
    (encode_event(transaction("x", channel="telepathy")), "unknown value 'telepathy'"),
    (encode_event(transaction("x", schema_version=2)), "unsupported schema_version 2"),
    (encode_event(transaction("x", note="z" * 20_000)), "exceeds 16384 bytes"),
    (encode_event(transaction("x", event_time=NOW + timedelta(hours=1))), "is in the future"),
]  # fmt: skip


def test_rejects_land_in_dead_letter(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = make_topic("dlq")
    ids, good = good_payloads("g", 2)
    payloads = [good[0], *(payload for payload, _ in MALFORMED), good[1]]
    produce(topic, payloads)

    result = ingest(kafka_broker, topic, tmp_path)
    assert (result.accepted, result.rejected) == (2, len(MALFORMED))
    assert result.offsets_after == {0: len(payloads)}
    assert sorted(r["transaction_id"] for r in bronze_rows(tmp_path, topic)) == ids

    dead = sorted(dead_rows(tmp_path, topic), key=lambda r: r["offset"])
    assert [r["offset"] for r in dead] == list(range(1, len(MALFORMED) + 1))
    for row, (payload, reason) in zip(dead, MALFORMED, strict=True):
        assert reason in row["reason"], (row["reason"], reason)
        assert row["raw_payload"] == payload and row["partition"] == 0
        assert row["rejected_at"] == NOW
    assert DeltaStore(str(tmp_path)).open(DEAD_LETTER_TABLE).schema().to_arrow().names == (
        DEAD_LETTER_SCHEMA.names
    )

    assert ingest(kafka_broker, topic, tmp_path).rejected == 0
    assert len(dead_rows(tmp_path, topic)) == len(MALFORMED)


def test_crash_between_dead_letter_and_bronze_commits(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    topic = make_topic("crash")
    ids, good = good_payloads("c", 3)
    produce(topic, [good[0], b"garbage", good[1], b"[]", good[2]])

    def crash(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("simulated crash before the bronze commit")

    with monkeypatch.context() as patch:
        patch.setattr(bronze, "_commit_bronze", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            ingest(kafka_broker, topic, tmp_path)
    assert len(dead_rows(tmp_path, topic)) == 2  # rejects committed first
    assert (
        bronze_rows(tmp_path, topic) == []
        and committed_offsets(topic, DeltaStore(str(tmp_path))) == {}
    )

    result = ingest(kafka_broker, topic, tmp_path)
    assert (result.accepted, result.rejected) == (3, 2)
    assert sorted(r["transaction_id"] for r in bronze_rows(tmp_path, topic)) == ids
    assert sorted(r["offset"] for r in dead_rows(tmp_path, topic)) == [1, 3]  # no duplicates


def test_multi_partition_bounded_batches(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = make_topic("multi", partitions=3)
    ids, payloads = good_payloads("m", 90)
    produce(topic, payloads, partitions=3)

    seen: list[int] = []
    first = ingest(kafka_broker, topic, tmp_path, max_events=40, progress=seen.append)
    assert first.accepted == 40 and seen[-1] == 40
    results = [first]
    while results[-1].accepted:
        results.append(ingest(kafka_broker, topic, tmp_path, max_events=40))
    assert sum(r.accepted for r in results) == 90
    assert results[-1].offsets_after == {0: 30, 1: 30, 2: 30}
    assert results[-1].lag == {0: 0, 1: 0, 2: 0}
    rows = bronze_rows(tmp_path, topic)
    assert sorted(r["transaction_id"] for r in rows) == sorted(ids)
    assert len({(r["_partition"], r["_offset"]) for r in rows}) == 90
    assert DeltaStore(str(tmp_path)).open(bronze_table(topic)).schema().to_arrow() == bronze_schema(
        TRANSACTIONS
    )


def test_recreated_topic_is_detected(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    topic = make_topic("reset")
    _, payloads = good_payloads("r", 5)
    produce(topic, payloads)
    assert ingest(kafka_broker, topic, tmp_path).offsets_after == {0: 5}

    delete_topic(kafka_broker.bootstrap, topic)
    ensure_topics(kafka_broker.bootstrap, {topic: 1})
    produce(topic, payloads[:2])

    with pytest.raises(BrokerOffsetsWentBackwards) as caught:
        ingest(kafka_broker, topic, tmp_path)
    assert (caught.value.topic, caught.value.partition) == (topic, 0)
    assert (caught.value.committed, caught.value.high_watermark) == (5, 2)
    assert len(bronze_rows(tmp_path, topic)) == 5
    assert committed_offsets(topic, DeltaStore(str(tmp_path))) == {0: 5}


def test_missing_topic_is_reported_not_created(kafka_broker: BrokerSpec, tmp_path: Path) -> None:
    topic = f"missing_{uuid.uuid4().hex[:10]}"
    with pytest.raises(TopicNotFound, match=topic):
        ingest(kafka_broker, topic, tmp_path)
    with pytest.raises(TopicNotFound):
        kafka_end_offsets(topic, kafka_broker.bootstrap)
    topics = AdminClient(admin_config(kafka_broker.bootstrap)).list_topics(timeout=10).topics
    assert topic not in topics  # brokers auto-create topics named in metadata requests
    assert bronze_rows(tmp_path, topic) == []  # the empty bronze table exists for downstream


def test_expired_offsets_are_reported(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None],
    tmp_path: Path,
) -> None:  # fmt: skip
    if kafka_broker.kind == "tansu":
        pytest.skip("tansu drops the connection on DeleteRecords")
    topic = make_topic("expired")
    ids, payloads = good_payloads("e", 10)
    produce(topic, payloads)
    assert ingest(kafka_broker, topic, tmp_path, max_events=3).offsets_after == {0: 3}

    admin = AdminClient(admin_config(kafka_broker.bootstrap))
    for future in admin.delete_records([TopicPartition(topic, 0, 6)]).values():
        future.result()  # as retention would: offsets 3..5 never reached bronze
    result = ingest(kafka_broker, topic, tmp_path)
    assert result.skipped == {0: (3, 6)}
    assert (result.accepted, result.offsets_before, result.offsets_after) == (4, {0: 6}, {0: 10})
    assert sorted(r["transaction_id"] for r in bronze_rows(tmp_path, topic)) == sorted(
        ids[:3] + ids[6:]
    )
    metadata = DeltaStore(str(tmp_path)).open(bronze_table(topic)).history(1)[0]
    assert '"skipped_expired": {"0": [3, 6]}' in metadata["fraud_platform.ingest"]
