"""FraudScorer with Redis unreachable: it still answers, degraded, and says why."""

from __future__ import annotations

import re

import httpx
import pytest

from fraud_platform.lib.features.services import FRAUD_SCORING_V1

from .conftest import Customer, Registered, Server

pytestmark = pytest.mark.serving


def _degraded_answers(client: httpx.Client) -> dict[str, float]:
    """``fraud_scorer_degraded_total`` by reason, summed over the workers."""
    totals: dict[str, float] = {}
    pattern = r'^fraud_scorer_degraded_total\{reason="(\w+)"\} ([0-9.e+]+)$'
    for reason, value in re.findall(pattern, client.get("/metrics").text, re.MULTILINE):
        totals[reason] = totals.get(reason, 0.0) + float(value)
    return totals


def test_score_without_redis_is_degraded(
    degraded_scorer: Server, registered_model: Registered, customer: Customer
):
    with httpx.Client(base_url=degraded_scorer.url, timeout=10.0) as client:
        before = _degraded_answers(client)
        answers = []
        for amount in (42.5, 42.5, 700.0):
            response = client.post("/score", json=customer.transaction(amount=amount))
            assert response.status_code == 200, response.text
            answers.append(response.json())
        after = _degraded_answers(client)
    first = answers[0]
    assert first["degraded"] is True
    assert "online store unavailable" in first["degraded_reason"]
    assert 0.0 <= first["score"] <= 1.0
    assert first["model_version"] == registered_model.tag
    assert set(first["feature_freshness"]) == {g.versioned_name for g in FRAUD_SCORING_V1.groups}
    assert all(age is None for age in first["feature_freshness"].values())
    # every answer is counted as degraded by its reason: Redis failed, or was skipped after a
    # recent failure (an outage costs one failed call per interval, not one per request)
    moved = {reason: after.get(reason, 0.0) - before.get(reason, 0.0) for reason in after}
    assert moved.get("online_store_error", 0.0) >= 1
    assert moved.get("online_store_error", 0.0) + moved.get("online_store_skipped", 0.0) == 3
    # a large amount without features goes to review at least
    large = answers[2]
    assert large["decision"] in ("review", "decline")
    assert "degraded_large_amount" in {r["name"] for r in large["reasons"] if r["kind"] == "rule"}
    assert "ERROR" in degraded_scorer.log_tail(200_000)  # the outage is logged, not silent


def test_degraded_policy_is_stricter_for_money_out(degraded_scorer: Server, customer: Customer):
    """policy.py's degraded table: a withdrawal over 200 goes to review at least; a card
    payment of the same amount is left to the model and the other rules."""

    def degraded_rules(**overrides) -> tuple[str, set[str]]:
        with httpx.Client(base_url=degraded_scorer.url, timeout=10.0) as client:
            response = client.post("/score", json=customer.transaction(**overrides))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["degraded"] is True
        return body["decision"], {r["name"] for r in body["reasons"] if r["kind"] == "rule"}

    decision, rules = degraded_rules(channel="withdrawal", amount=300.0)
    assert decision in ("review", "decline") and "degraded_large_amount" in rules
    _, rules = degraded_rules(channel="ecommerce", amount=300.0)
    assert "degraded_large_amount" not in rules
