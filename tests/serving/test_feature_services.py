"""The scoring path reads what the loaded model's feature service pins (in process, real Redis):
a model registered with ``feature_service: fraud_scoring_v2`` reads the v2 keys of
user_txn_velocity, a model without the field reads v1, and one FeatureLookup follows whichever
model scores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis

from fraud_platform.lib.contracts.events import TRANSACTIONS, validate_record
from fraud_platform.lib.features.catalog import USER_TXN_VELOCITY, USER_TXN_VELOCITY_V2
from fraud_platform.lib.features.online.layout import online_key
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureService
from fraud_platform.lib.features.services import FRAUD_SCORING_V1, FRAUD_SCORING_V2
from fraud_platform.lib.features.windows import lookup_plan, uniform_totals
from fraud_platform.lib.serving.lookup import FeatureLookup
from fraud_platform.lib.serving.scoring import ScoringModel

from .conftest import (
    MODEL_NAME,
    REDIS_URL,
    THRESHOLDS,
    Customer,
    _group_value,
    delete_customer,
    platform_model_store,
    train_tiny_model,
    write_customer,
)

pytestmark = pytest.mark.serving
V2_COUNT_1H = 7  # write_customer writes 2 for every int feature: 7 can only come from v2's key
V2_MIN_7D = 3.5


def load_registered(home: Path, service: FeatureService | None) -> ScoringModel:
    """Register a tiny model trained on ``service`` (None: metadata without the field, as
    models registered before services were recorded) and load it back from the store."""
    store = platform_model_store(home.parent)  # home is <data dir>/bentoml
    model = train_tiny_model(seed=5, service=service or FRAUD_SCORING_V1)
    metadata: dict[str, Any] = {
        "features": list(model.feature_names_),
        "categorical_features": list(FRAUD_SCORING_V1.categorical_features),
        "thresholds": THRESHOLDS,
    }
    if service is not None:
        metadata["feature_service"] = service.name
    tag = store.save_catboost(MODEL_NAME, model, metadata=metadata, labels={"stage": "test"})
    entry = store.get(tag)
    return ScoringModel.from_metadata(store.load_catboost(tag), entry.info.metadata, tag)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services") / "bentoml"


@pytest.fixture(scope="module")
def v2_only(redis_client: redis.Redis) -> Iterator[Customer]:
    """A customer whose user_txn_velocity_v2 row holds values only that row can give (version
    1 is read from version 2's rows: ``shared.storage_host``)."""
    known = write_customer(redis_client, datetime.now(UTC) - timedelta(minutes=5))
    row: dict[str, Any] = {ENTITY_KEY: known.user_id, FEATURE_TIME: known.feature_time}
    for name in USER_TXN_VELOCITY_V2.feature_names:
        row[name] = _group_value(USER_TXN_VELOCITY_V2, name, known.feature_time)
    row.update(user_txn_count_1h=V2_COUNT_1H, user_amount_min_7d=V2_MIN_7D)
    # the 1-hour count is served from the row's totals: V2_COUNT_1H events
    row.update(uniform_totals(USER_TXN_VELOCITY_V2, V2_COUNT_1H, 40.0, known.feature_time))
    # the 7-day minimum is served from the row's profile: one granule whose minimum is V2_MIN_7D
    plan = lookup_plan(USER_TXN_VELOCITY_V2)
    minimum = next(f.profile for f in plan.features if f.name == "user_amount_min_7d")
    assert minimum is not None
    row[minimum.values] = [V2_MIN_7D]
    write_snapshot(redis_client, USER_TXN_VELOCITY_V2, pl.DataFrame([row]))
    assert online_key(USER_TXN_VELOCITY, known.user_id) == online_key(
        USER_TXN_VELOCITY_V2, known.user_id
    )
    yield known
    delete_customer(redis_client, known)


@pytest.fixture(scope="module")
def lookup() -> FeatureLookup:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return FeatureLookup(client)  # built for v1, like the service at startup


def record_of(customer: Customer) -> dict[str, Any]:
    body = {"schema_version": 1, **customer.transaction(), "event_time": datetime.now(UTC)}
    return validate_record(TRANSACTIONS, {**body, "event_time": body["event_time"].isoformat()})


def test_model_pinned_to_v2_reads_v2_keys(home: Path, lookup: FeatureLookup, v2_only: Customer):
    scoring = load_registered(home, FRAUD_SCORING_V2)
    assert scoring.service is FRAUD_SCORING_V2
    assert "user_amount_min_7d" in scoring.features
    txn = record_of(v2_only)
    found = lookup.lookup(txn, scoring.service)
    assert not found.degraded, found.degraded_reason
    assert set(found.age_seconds) == set(FRAUD_SCORING_V2.group_names)
    assert found.age_seconds["user_txn_velocity_v2"] is not None
    assert found.values["user_txn_count_1h"] == V2_COUNT_1H
    assert found.values["user_amount_min_7d"] == V2_MIN_7D
    result = scoring.score(txn, found.values, degraded=found.degraded)
    assert result.features["user_txn_count_1h"] == V2_COUNT_1H
    assert result.features["user_amount_min_7d"] == V2_MIN_7D


def test_model_without_a_recorded_service_reads_v1(
    home: Path, lookup: FeatureLookup, v2_only: Customer, customer: Customer
):
    scoring = load_registered(home, None)
    assert scoring.service is FRAUD_SCORING_V1
    found = lookup.lookup(record_of(customer), scoring.service)
    assert not found.degraded, found.degraded_reason
    assert found.values["user_txn_count_1h"] == 2
    assert "user_amount_min_7d" not in found.values
    assert set(found.age_seconds) == set(FRAUD_SCORING_V1.group_names)
    # v1 reads version 2's row: its count, without version 2's own feature
    from_v2 = lookup.lookup(record_of(v2_only), scoring.service)
    assert not from_v2.degraded, from_v2.degraded_reason
    assert from_v2.values["user_txn_count_1h"] == V2_COUNT_1H
    assert "user_amount_min_7d" not in from_v2.values
    assert from_v2.age_seconds["user_txn_velocity_v1"] is not None


def test_one_lookup_follows_whichever_model_scores(
    home: Path, lookup: FeatureLookup, v2_only: Customer
):
    """Hot reload: the service swaps in a model pinned to another service and back."""
    v1, v2 = load_registered(home, FRAUD_SCORING_V1), load_registered(home, FRAUD_SCORING_V2)
    txn = record_of(v2_only)
    for scoring in (v2, v1, v2, v1):
        found = lookup.lookup(txn, scoring.service)
        pinned = scoring.service is FRAUD_SCORING_V2
        assert not found.degraded, found.degraded_reason
        assert found.values["user_txn_count_1h"] == V2_COUNT_1H
        assert found.values.get("user_amount_min_7d") == (V2_MIN_7D if pinned else None)
