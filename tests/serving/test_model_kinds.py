"""Whatever kind wins the selection (CatBoost, logistic regression, random forest), it
round-trips through the model store and the registry and scores through the service's path:
in process through ``models_bento.model_loading`` and over HTTP with ``bentoml serve``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.features.request import model_row
from fraud_platform.lib.features.services import FRAUD_SCORING_V1 as SERVICE
from fraud_platform.lib.model.baseline import SklearnModel
from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.serving import registry
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training.baselines import BaselineConfig, train_baseline
from fraud_platform.lib.training.fit import Split
from models_bento.model_loading import load_scoring_model

from .conftest import (
    MODEL_NAME,
    REDIS_URL,
    THRESHOLDS,
    Customer,
    Registered,
    _group_value,
    platform_model_store,
    start_server,
    stop_server,
    synthetic_rows,
    train_tiny_model,
)

pytestmark = pytest.mark.serving
KINDS = ("catboost", "logreg", "forest")


def _model(kind: str) -> Any:
    if kind == "catboost":
        return train_tiny_model(seed=11)
    rows, labels = synthetic_rows(1_500, seed=11)
    frame = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        is_fraud=pl.Series(labels.astype(bool))
    )
    now = datetime.now(UTC)
    split = Split(frame, frame, frame, now, now, now, now, now)
    config = BaselineConfig(forest_trees=15, thread_count=1)
    trained = train_baseline(
        kind, split, SERVICE.numeric_features, list(SERVICE.categorical_features), config
    )
    return trained.model


def _register(data_dir: Path, kind: str) -> Registered:
    model = _model(kind)
    metadata = {
        "features": list(model.feature_names_),
        "categorical_features": list(SERVICE.categorical_features),
        "thresholds": THRESHOLDS,
        "feature_service": SERVICE.name,
    }
    store = platform_model_store(data_dir)
    tag = store.save_model(MODEL_NAME, model, metadata=metadata, labels={"stage": "test"})
    store.promote(tag)
    return Registered(data_dir, data_dir / "bentoml", tag, model, metadata)


def _looked_up(customer: Customer) -> dict[str, Any]:
    """The online values ``write_customer`` stored for every group of the service."""
    return {
        name: _group_value(group, name, customer.feature_time)
        for group in SERVICE.groups
        for name in group.feature_names
    }


@pytest.mark.parametrize("kind", KINDS)
def test_each_model_kind_round_trips_the_registry_and_scores_in_the_service_path(
    tmp_path: Path, kind: str, customer: Customer
) -> None:
    registered = _register(tmp_path, kind)
    delta = DeltaStore(str(tmp_path / "delta"))
    assert registry.champion(delta, MODEL_NAME) == registered.tag
    recorded = registry.events(delta, MODEL_NAME, registered.tag)
    assert recorded["event"].to_list() == ["registered", "promoted"]

    scoring, info = load_scoring_model(registered.bentoml_home, delta)
    assert scoring.tag == registered.tag and info["champion"] is True
    assert info["entry"].info.metadata["model_kind"] == kind
    assert isinstance(scoring.model, SklearnModel) == (kind != "catboost")

    txn = {**customer.transaction(amount=950.0, channel="p2p"), "event_time": datetime.now(UTC)}
    txn["counterparty_id"] = customer.counterparty_id
    looked_up = _looked_up(customer)
    result = scoring.score(txn, looked_up, explain="always")
    row = model_row(txn, looked_up, SERVICE)
    expected = float(predict_proba(registered.model, row, allow_missing=True)[0])
    assert result.score == pytest.approx(expected, abs=1e-12)
    assert result.model_tag == registered.tag
    model_reasons = [r for r in result.reasons if r["kind"] == "model"]
    assert model_reasons, result.reasons
    assert all(r["name"] in SERVICE.model_features for r in model_reasons)
    assert all(r["contribution"] > 0 for r in model_reasons)


def test_logistic_regression_reasons_are_its_linear_contributions(customer: Customer) -> None:
    model = _model("logreg")
    row = model_row(
        {**customer.transaction(), "event_time": datetime.now(UTC)}, _looked_up(customer), SERVICE
    )
    frame = model.frame(row, allow_missing=True)
    transformed = model.pipeline[:-1].transform(frame)[0]
    coef = model.pipeline[-1].coef_[0]
    per_feature = np.zeros(len(model.features))
    for j, owner in enumerate(model.column_owner):
        per_feature[owner] += coef[j] * transformed[j]
    # the contributions add up to the model's log-odds (intercept aside)
    score = float(predict_proba(model, row, allow_missing=True)[0])
    intercept = float(model.pipeline[-1].intercept_[0])
    assert per_feature.sum() + intercept == pytest.approx(np.log(score / (1 - score)), abs=1e-9)
    reasons = model.reasons(row, k=3, allow_missing=True)
    top = np.argsort(-per_feature, kind="stable")[: len(reasons)]
    assert [r["feature"] for r in reasons] == [model.features[i] for i in top]


def test_a_logistic_regression_champion_is_served_over_http(
    tmp_path: Path, customer: Customer
) -> None:
    registered = _register(tmp_path, "logreg")
    server = start_server(registered, REDIS_URL, "logreg")
    try:
        body = customer.transaction(amount=950.0)
        sent_at = datetime.now(UTC)
        answer = httpx.post(f"{server.url}/score", json=body, timeout=30).json()
    finally:
        stop_server(server)
    assert answer["model_version"] == registered.tag, answer
    assert answer["degraded"] is False, answer["degraded_reason"]
    # the same transaction scored in process with the values the server read from Redis; the
    # elapsed-time features move by the request's latency, hence the tolerance
    txn = {**body, "event_time": sent_at + timedelta(milliseconds=50)}
    row = model_row(txn, _looked_up(customer), SERVICE)
    expected = float(predict_proba(registered.model, row, allow_missing=True)[0])
    assert answer["score"] == pytest.approx(expected, abs=1e-3)
