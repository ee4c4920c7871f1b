"""The decision log against a real broker (noida), and with the broker down: in process and
through a real ``bentoml serve``."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from fraud_platform.lib.contracts.events import EVENT_FIELDS, SCORES, validate_event
from fraud_platform.lib.kafka.admin import admin_config, ensure_topics
from fraud_platform.lib.serving.decision_log import DecisionLog
from fraud_platform.lib.serving.lookup import Lookup
from fraud_platform.lib.serving.scoring import ScoringModel, decision_event
from fraud_platform.tools.brokers import BrokerSpec

from .conftest import (
    REDIS_URL,
    Customer,
    Registered,
    Server,
    free_port,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def scoring(registered_model: Registered) -> ScoringModel:
    return ScoringModel.from_metadata(
        registered_model.model, registered_model.metadata, registered_model.tag
    )


def an_event(scoring: ScoringModel, customer: Customer, **overrides: Any) -> dict[str, Any]:
    txn = {**customer.transaction(**overrides), "event_time": datetime.now(UTC)}
    flagged = {**txn, "amount": 900.0, "channel": "p2p", "counterparty_id": "p-x"}
    result = scoring.score(flagged, {}, explain="always")  # with reasons: a full-size event
    lookup = Lookup(values={}, age_seconds={g.versioned_name: 12.5 for g in scoring.service.groups})
    return decision_event(
        request_id=uuid.uuid4().hex,
        scored_at=datetime.now(UTC),
        txn=flagged,
        result=result,
        lookup=lookup,
        feature_service=scoring.service.name,
    )


def read_topic(bootstrap: str, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every message of ``topic`` (all partitions, from the start) up to its end offsets."""
    consumer = Consumer(
        {
            **admin_config(bootstrap),
            "group.id": f"t-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        }
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        messages, deadline = [], time.monotonic() + timeout_s
        positions = dict.fromkeys(partitions, 0)
        while any(positions[p] < ends[p] for p in partitions) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            messages.append(msg)
            positions[msg.partition()] = msg.offset() + 1
        return messages
    finally:
        consumer.close()


def test_decisions_arrive_keyed_and_valid(
    decision_broker: BrokerSpec, scoring: ScoringModel, customer: Customer
):
    topic = f"scores_{uuid.uuid4().hex[:8]}"
    ensure_topics(decision_broker.bootstrap, [topic], partitions=2, retention_ms=3_600_000)
    events = [an_event(scoring, customer) for _ in range(40)]
    with DecisionLog(decision_broker.bootstrap, topic=topic) as log:
        assert all(log.append(e) for e in events)
        assert log.flush(10) == 0
        assert log.stats()["delivered"] == 40 and log.dropped == 0
    messages = read_topic(decision_broker.bootstrap, topic)
    assert len(messages) == 40
    by_request = {e["request_id"]: e for e in events}
    for msg in messages:
        record = validate_event(SCORES, msg.value())
        assert msg.key() == record["transaction_id"].encode()
        assert by_request[record["request_id"]]["transaction_id"] == record["transaction_id"]


def test_broker_down_never_blocks_and_counts_drops(scoring: ScoringModel, customer: Customer):
    dropped: list[tuple[int, str]] = []
    log = DecisionLog(
        f"127.0.0.1:{free_port()}", max_buffered=5, on_drop=lambda n, why: dropped.append((n, why))
    )  # nothing listens there
    event = an_event(scoring, customer)
    took = []
    for _ in range(20):
        started = time.perf_counter()
        log.append(event)
        took.append(time.perf_counter() - started)
    assert max(took) < 0.05, max(took)  # no waiting for room, no waiting for the broker
    assert log.stats()["appended"] == 5
    assert log.dropped == 15
    log.close(timeout_s=0.5)  # the 5 buffered cannot be delivered either
    assert log.dropped == 20 and sum(n for n, _ in dropped) == 20
    assert {why for _, why in dropped} == {"buffer_full", "shutdown"}
    assert log.append(event) is False and log.dropped == 21
    assert dropped[-1] == (1, "shutdown")


def test_event_has_every_contract_field(scoring: ScoringModel, customer: Customer):
    assert set(an_event(scoring, customer)) == {"schema_version"} | {
        f.name for f in EVENT_FIELDS[SCORES]
    }


# ---------------------------------------------------------------------------------------------
# through the real server


def test_served_decision_is_on_the_scores_topic(
    scorer: Server, decision_broker: BrokerSpec, customer: Customer, registered_model: Registered
):
    body = customer.transaction(amount=77.0)
    request_id = f"req-log-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{scorer.url}/score", json=body, headers={"x-request-id": request_id}, timeout=10
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    deadline = time.monotonic() + 15
    found: list[dict[str, Any]] = []
    while not found and time.monotonic() < deadline:
        found = [
            validate_event(SCORES, m.value())
            for m in read_topic(decision_broker.bootstrap, SCORES)
            if json.loads(m.value())["request_id"] == request_id
        ]
        time.sleep(0.2)
    assert len(found) == 1, scorer.log_tail()
    record = found[0]
    assert record["transaction_id"] == body["transaction_id"]
    assert record["amount"] == 77.0 and record["channel"] == "ecommerce"
    assert record["model_version"] == registered_model.tag == answer["model_version"]
    assert record["score"] == answer["score"] and record["decision"] == answer["decision"]
    assert record["feature_service"] == registered_model.metadata.get(
        "feature_service", "fraud_scoring_v1"
    )
    assert record["degraded"] is False and record["degraded_reason"] is None
    features = json.loads(record["features"])
    assert features["amount"] == 77.0 and features["channel"] == "ecommerce"
    assert json.loads(record["feature_age_s"]).keys() == answer["feature_freshness"].keys()
    assert [r["name"] for r in json.loads(record["reasons"])] == [
        r["name"] for r in answer["reasons"]
    ]


def test_server_with_kafka_down_still_decides_and_counts_drops(
    registered_model: Registered, customer: Customer
):
    server = start_server(
        registered_model,
        REDIS_URL,
        "kafka-down",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",  # nothing listens there
        extra_env={"FRAUD_PLATFORM_DECISION_LOG_BUFFER": "3"},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(10):
                started = time.perf_counter()
                response = client.post("/score", json=customer.transaction())
                assert response.status_code == 200, response.text
                assert time.perf_counter() - started < 1.0
    finally:
        stop_server(server)
    log = server.log_tail(50_000)
    assert "decision log: 1 record(s) dropped so far" in log, log
    closing = [line for line in log.splitlines() if "decision log closed" in line]
    assert closing and "'dropped': 10" in closing[-1], log
