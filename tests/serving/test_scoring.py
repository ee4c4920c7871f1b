"""In-process tests of the scoring library: ScoringModel, FeatureLookup, the request schema.
No network except a connection refused on a closed local port. The decision policy's own tests
(thresholds, rules, degraded mode) are tests/unit/serving/test_policy.py."""

from __future__ import annotations

import math
import typing
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from fraud_platform.lib.contracts.events import (
    CHANNELS,
    EVENT_FIELDS,
    MAX_STRING_CHARS,
    SCORES,
    TRANSACTIONS,
    RejectedEvent,
    encode_event,
    event_key,
    validate_event,
)
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.serving.lookup import FeatureLookup, Lookup
from fraud_platform.lib.serving.policy import Thresholds, decide
from fraud_platform.lib.serving.scoring import ScoringModel, decision_event
from models_bento.schemas import EXAMPLE_TRANSACTION, TransactionRequest

from .conftest import REDIS_URL, THRESHOLDS, free_port, train_tiny_model

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def txn(**overrides: Any) -> dict[str, Any]:
    base = {
        **EXAMPLE_TRANSACTION,
        "event_time": NOW,
        "transaction_id": "t-1",
    }
    base.update(overrides)
    return base


# ---------------------------------------------------------------------------------------------
# ScoringModel


@pytest.fixture(scope="module")
def scoring() -> ScoringModel:
    model = train_tiny_model()
    metadata = {
        "features": list(model.feature_names_),
        "categorical_features": list(FRAUD_SCORING_V1.categorical_features),
        "thresholds": THRESHOLDS,
    }
    return ScoringModel.from_metadata(model, metadata, "fraud_catboost:test")


def test_scoring_model_scores_with_and_without_lookups(scoring: ScoringModel):
    looked_up = {"user_amount_mean_30d": 40.0, "user_amount_std_30d": 10.0, "card_txn_count_1h": 2}
    result = scoring.score(txn(), looked_up)
    assert 0.0 <= result.score <= 1.0
    assert result.decision == decide(result.score, THRESHOLDS) == result.model_decision
    assert result.model_tag == "fraud_catboost:test"
    assert set(result.features) == set(scoring.features)
    assert result.features["amount_to_user_mean_30d"] == pytest.approx(129.99 / 40.0)
    empty = scoring.score(txn(), {})
    assert 0.0 <= empty.score <= 1.0
    assert empty.features["is_new_device_for_user"] == 1


def test_scoring_model_explains_only_flagged_by_default(scoring: ScoringModel):
    approved = scoring.score(txn(amount=5.0, channel="card_present"), {})
    assert approved.decision == "approve"
    assert approved.reasons == []
    flagged = scoring.score(txn(amount=900.0, channel="p2p", counterparty_id="u-9"), {})
    assert flagged.decision != "approve"
    model_reasons = [r for r in flagged.reasons if r["kind"] == "model"]
    assert 1 <= len(model_reasons) <= 3
    assert model_reasons[0]["name"] in ("amount", "channel")
    explained = scoring.score(txn(amount=5.0, channel="card_present"), {}, explain="always")
    assert all(r["contribution"] > 0 for r in explained.reasons)


def test_scoring_model_rule_overrides_model_and_is_named(scoring: ScoringModel):
    now_txn = txn(amount=5_000.0, channel="card_present")
    looked_up = {"last_password_change_time": NOW - timedelta(minutes=10)}  # new device: no row
    result = scoring.score(now_txn, looked_up)
    assert result.decision == "decline"
    assert result.rule_hits == ["large_amount_new_device_after_password_change"]
    rule_reasons = [r for r in result.reasons if r["kind"] == "rule"]
    assert rule_reasons[0]["name"] == "large_amount_new_device_after_password_change"
    assert rule_reasons[0]["action"] == "decline"


def test_scoring_model_score_many_matches_score(scoring: ScoringModel):
    txns = [txn(amount=a, transaction_id=f"t-{a}") for a in (5.0, 90.0, 700.0)]
    lookups = [{}, {"user_amount_mean_30d": 30.0}, {"card_txn_count_1h": 4}]
    batch = scoring.score_many(txns, lookups)
    single = [scoring.score(t, lk) for t, lk in zip(txns, lookups, strict=True)]
    assert [r.score for r in batch] == pytest.approx([r.score for r in single])
    assert [r.decision for r in batch] == [r.decision for r in single]


def test_scoring_model_rejects_metadata_that_does_not_match_model(scoring: ScoringModel):
    metadata = {
        "features": [*scoring.features, "not_a_feature"],
        "categorical_features": list(scoring.categorical),
        "thresholds": THRESHOLDS,
    }
    with pytest.raises(ValueError, match="not_a_feature"):
        ScoringModel.from_metadata(scoring.model, metadata, "x:1")
    with pytest.raises(ValueError, match="thresholds"):
        ScoringModel.from_metadata(scoring.model, {"features": [], "categorical_features": []}, "x")


def test_decision_event_meets_the_scores_contract(scoring: ScoringModel):
    import json

    t = txn()
    result = scoring.score(t, {})
    lookup = Lookup(values={}, age_seconds={"card_velocity_v1": None}, degraded_reason="x")
    event = decision_event(
        request_id="r1",
        scored_at=NOW,
        txn=t,
        result=result,
        lookup=lookup,
        feature_service=scoring.service.name,
    )
    payload = encode_event(event)
    json.loads(payload)  # strict JSON: no NaN
    record = validate_event(SCORES, payload, now=NOW)
    assert event_key(SCORES, event) == t["transaction_id"].encode()
    assert record["event_time"] == t["event_time"]
    assert record["scored_at"] == NOW
    assert record["counterparty_id"] is None
    assert record["degraded"] is True and record["degraded_reason"] == "x"
    assert record["model_version"] == scoring.tag
    assert record["feature_service"] == scoring.service.name
    features = json.loads(record["features"])
    assert set(features) == set(scoring.features)
    assert not any(isinstance(v, float) and math.isnan(v) for v in features.values())
    assert json.loads(record["feature_age_s"]) == {"card_velocity_v1": None}
    assert isinstance(json.loads(record["reasons"]), list)
    with pytest.raises(RejectedEvent, match="features"):
        validate_event(SCORES, encode_event({**event, "features": 3}), now=NOW)
    with pytest.raises(RejectedEvent, match="decision"):
        validate_event(SCORES, encode_event({**event, "decision": "maybe"}), now=NOW)


# ---------------------------------------------------------------------------------------------
# FeatureLookup without Redis


def test_feature_lookup_degrades_when_redis_is_down():
    client = redis.Redis(port=free_port(), socket_timeout=0.05, socket_connect_timeout=0.05)
    lookup = FeatureLookup(client, retry_after_s=60.0)
    first = lookup.lookup(txn())
    assert first.degraded and "online store unavailable" in first.degraded_reason
    assert first.values == {}
    assert set(first.age_seconds) == {g.versioned_name for g in FRAUD_SCORING_V1.groups}
    assert all(age is None for age in first.age_seconds.values())
    # within retry_after_s Redis is not tried again: same answer, no timeout paid
    second = lookup.lookup(txn())
    assert second.degraded_reason == first.degraded_reason


def test_degraded_decisions_meet_the_scores_contract(scoring: ScoringModel):
    """Every group missing (entities the store never saw) and a Redis error: reasons longer
    than the contract's MAX_STRING_CHARS sent a year-scale demo's decisions to the dead letters."""
    unseen = txn(**{k: f"{k}-{uuid.uuid4().hex}" for k in ("user_id", "card_id", "merchant_id")})
    store = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    down = redis.Redis(port=free_port(), socket_timeout=0.05, socket_connect_timeout=0.05)
    missing = FeatureLookup(store).lookup(unseen)
    unavailable = FeatureLookup(down).lookup(unseen)
    for lookup in (missing, unavailable):
        assert lookup.degraded
        event = decision_event(
            request_id="r1",
            scored_at=NOW,
            txn=unseen,
            result=scoring.score(unseen, lookup.values),
            lookup=lookup,
            feature_service=scoring.service.name,
        )
        record = validate_event(SCORES, encode_event(event), now=NOW)
        assert record["degraded_reason"] == lookup.degraded_reason
    assert missing.degraded_reason.startswith("no online features for groups: ")
    assert missing.degraded_reason.endswith("…")
    assert len(missing.degraded_reason) == MAX_STRING_CHARS


# ---------------------------------------------------------------------------------------------
# request schema == contract


def test_transaction_request_mirrors_the_contract():
    contract = {f.name: f for f in EVENT_FIELDS[TRANSACTIONS]}
    fields = TransactionRequest.model_fields
    assert list(fields) == list(contract)
    for name, spec in contract.items():
        required = spec.required and name != "event_time"  # event_time defaults to now
        assert fields[name].is_required() == required, name
    assert set(typing.get_args(fields["channel"].annotation)) == set(CHANNELS)


def test_transaction_request_defaults_event_time_to_now():
    body = {k: v for k, v in EXAMPLE_TRANSACTION.items() if k != "event_time"}
    before = datetime.now(UTC)
    request = TransactionRequest.model_validate(body)
    assert before <= request.event_time <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"amount": 0}, "must be > 0"),
        ({"amount": 1e308}, "must be between"),
        ({"event_time": None}, "expected an ISO-8601 string, got NoneType"),
        ({"event_time": 1700000000}, "expected an ISO-8601 string, got int"),
        ({"event_time": "9999-12-31T23:00:00-14:00"}, "out of range in UTC"),
        ({"user_id": "   "}, "blank"),
        ({"amount": "12"}, "valid number"),
        ({"channel": "fax"}, "Input should be"),
        ({"channel": "p2p", "counterparty_id": None}, "counterparty_id"),
        ({"event_time": "2099-01-01T00:00:00Z"}, "in the future"),
        ({"merchant_id": ""}, "at least 1 character"),
        ({"extra": 1}, "Extra inputs"),
    ],
)
def test_transaction_request_rejects_contract_violations(change: dict, message: str):
    with pytest.raises(ValidationError, match=message):
        TransactionRequest.model_validate({**EXAMPLE_TRANSACTION, **change})


def test_online_store_client_gives_up_fast_on_a_hung_redis():
    """A server that accepts connections and never answers: the lookup degrades after one
    connection, and while ``retry_after_s`` runs the next lookup does not try Redis at all
    (counted as connections the server accepted: a lookup that tries opens a new one, since
    redis-py drops a connection that timed out)."""
    import socket
    import threading

    from models_bento.service import online_store_client

    accepted: list[socket.socket] = []
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        hung.settimeout(0.2)
        stop = threading.Event()

        def accept_and_hold() -> None:
            while not stop.is_set():
                try:
                    accepted.append(hung.accept()[0])
                except TimeoutError:
                    continue

        acceptor = threading.Thread(target=accept_and_hold, daemon=True)
        acceptor.start()
        try:
            client = online_store_client(f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
            lookup = FeatureLookup(client, retry_after_s=60.0)
            first = lookup.lookup(txn())
            attempts_first = len(accepted)
            second = lookup.lookup(txn())
            attempts_second = len(accepted)
            client.close()
        finally:
            stop.set()
            acceptor.join(5)
            for conn in accepted:
                conn.close()
    assert first.degraded and "Timeout" in first.degraded_reason
    assert attempts_first == 1
    assert second.degraded and second.degraded_reason == first.degraded_reason
    assert attempts_second == 1  # skipped while retry_after_s runs: Redis not tried again


def test_service_module_does_not_import_dagster():
    import subprocess
    import sys

    code = (
        "import sys, models_bento.service, fraud_platform.lib.serving.decision_log;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'dagster_dbt'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_resolve_model_tag_prefers_champion_then_newest(tmp_path, scoring: ScoringModel):
    from models_bento.model_loading import load_scoring_model, resolve_model_tag

    from .conftest import platform_model_store

    home = tmp_path / "bentoml"
    store = platform_model_store(tmp_path)
    with pytest.raises(RuntimeError, match="no model 'fraud_catboost'"):
        resolve_model_tag(home, store.delta)
    metadata = {
        "features": list(scoring.features),
        "categorical_features": list(scoring.categorical),
        "thresholds": THRESHOLDS,
    }
    first = store.save_catboost("fraud_catboost", scoring.model, metadata=metadata, labels={})
    second = store.save_catboost("fraud_catboost", scoring.model, metadata=metadata, labels={})
    assert resolve_model_tag(home, store.delta) == (second, False)
    store.promote(first)
    assert resolve_model_tag(home, store.delta) == (first, True)
    loaded, info = load_scoring_model(home, store.delta)
    assert loaded.tag == first and info["champion"] is True
    assert loaded.thresholds == Thresholds(**THRESHOLDS)
