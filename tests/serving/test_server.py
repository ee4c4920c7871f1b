"""A real ``bentoml serve`` of FraudScorer, called over HTTP (Redis up)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from fraud_platform.lib.features.services import FRAUD_SCORING_V1

from .conftest import Customer, Registered, Server

pytestmark = pytest.mark.serving

GROUPS = {g.versioned_name for g in FRAUD_SCORING_V1.groups}


@pytest.fixture(scope="module")
def client(scorer: Server):
    with httpx.Client(base_url=scorer.url, timeout=10.0) as http:
        yield http


def test_score_valid_transaction(
    client: httpx.Client, customer: Customer, registered_model: Registered
):
    # a p2p transfer to the customer's known counterparty: every feature group applies
    body = customer.transaction(channel="p2p", counterparty_id=customer.counterparty_id)
    response = client.post("/score", json=body, headers={"x-request-id": "req-valid-1"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["request_id"] == "req-valid-1"
    assert answer["transaction_id"] == body["transaction_id"]
    assert 0.0 <= answer["score"] <= 1.0
    assert answer["decision"] in ("approve", "review", "decline")
    assert answer["model_version"] == registered_model.tag
    assert set(answer["feature_freshness"]) == GROUPS
    # features were written 5 minutes before the session started
    assert all(
        age is not None and 240 < age < 3_600 for age in answer["feature_freshness"].values()
    )
    assert answer["degraded"] is False, answer["degraded_reason"]
    assert answer["degraded_reason"] is None


def test_score_explains_flagged_transactions(client: httpx.Client, customer: Customer):
    # the tiny model learned "big p2p amounts are fraud"
    body = customer.transaction(amount=900.0, channel="p2p", counterparty_id="u-other")
    answer = client.post("/score", json=body).json()
    assert answer["decision"] in ("review", "decline"), answer
    model_reasons = [r for r in answer["reasons"] if r["kind"] == "model"]
    assert model_reasons and all(r["contribution"] > 0 for r in model_reasons)
    assert {r["name"] for r in model_reasons} <= set(FRAUD_SCORING_V1.model_features)


def test_score_unknown_user_is_degraded_but_answers(client: httpx.Client, customer: Customer):
    body = customer.transaction(user_id=f"u-nobody-{uuid.uuid4().hex[:8]}")
    answer = client.post("/score", json=body).json()
    assert answer["degraded"] is True
    assert "user_txn_velocity_v1" in answer["degraded_reason"]
    assert answer["feature_freshness"]["user_txn_velocity_v1"] is None
    assert answer["feature_freshness"]["card_velocity_v1"] is not None


@pytest.mark.parametrize(
    ("case", "change", "expected"),
    [
        ("negative amount", {"amount": -5.0}, "must be > 0"),
        ("unknown channel", {"channel": "pigeon"}, "Input should be 'card_present'"),
        ("missing field", {"user_id": None}, "user_id"),
        ("p2p without counterparty", {"channel": "p2p"}, "p2p transactions need a counterparty_id"),
        ("extra field", {"favourite_colour": "red"}, "Extra inputs are not permitted"),
        ("naive event_time", {"event_time": "2026-03-01T12:00:00"}, "without a UTC offset"),
    ],
)
def test_score_rejects_bad_request(
    client: httpx.Client, customer: Customer, case: str, change: dict, expected: str
):
    body = customer.transaction(**change)
    if change.get("user_id", "") is None:
        body.pop("user_id")
    response = client.post("/score", json=body)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert expected in response.text, (case, response.text)


def test_score_rejects_malformed_json(client: httpx.Client):
    response = client.post(
        "/score",
        content=b'{"transaction_id": "t-1", ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert "Invalid JSON" in response.text


def test_model_endpoint_describes_the_champion(client: httpx.Client, registered_model: Registered):
    response = client.post("/model", json={})
    assert response.status_code == 200, response.text
    info = response.json()
    assert info["model_version"] == registered_model.tag
    assert info["champion"] is True
    assert info["features"] == registered_model.metadata["features"]
    assert info["thresholds"] == {"review": 0.5, "decline": 0.9}
    assert info["metrics"] == {"test_average_precision": 0.5}
    assert {r["name"] for r in info["rules"]} >= {"large_amount_new_device_after_password_change"}


def test_openapi_documents_the_request(client: httpx.Client):
    response = client.get("/docs.json")
    assert response.status_code == 200, response.text
    spec = response.json()
    request = spec["components"]["schemas"]["TransactionRequest"]
    assert request["properties"]["amount"]["description"].startswith("Amount")
    assert request["example"]["channel"] == "ecommerce"
    assert "/score" in spec["paths"] and "/model" in spec["paths"]
