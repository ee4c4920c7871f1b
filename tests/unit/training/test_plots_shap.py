"""SHAP values of the trained model, the SHAP/over-time plots and daily metrics."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib import plots
from fraud_platform.lib.model.explain import shap_values
from fraud_platform.lib.model.input import predict_proba, to_model_input
from fraud_platform.lib.training import metrics
from fraud_platform.lib.training.fit import time_split, train_model
from tests.unit.training.synthetic import CATEGORICAL, FAST, NUMERIC

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def split(frame: pl.DataFrame):
    return time_split(frame, FAST)


@pytest.fixture(scope="module")
def trained(split):
    return train_model(split, NUMERIC, CATEGORICAL, FAST)


def test_shap_rows_plus_expected_value_equal_the_raw_log_odds(trained, split) -> None:
    shap, values, features = shap_values(trained, split.test, max_rows=300, seed=3)
    assert features == [*NUMERIC, *CATEGORICAL]
    assert shap.shape == (300, len(features))
    assert values.columns == features and values.height == 300
    raw = trained.model.predict(
        to_model_input(values, features, CATEGORICAL), prediction_type="RawFormulaVal"
    )
    # CatBoost's expected value (the dropped last column) is the same for every row.
    full = np.asarray(
        trained.model.get_feature_importance(
            to_model_input(values.head(1), features, CATEGORICAL), type="ShapValues"
        )
    )
    expected_value = full[0, -1]
    np.testing.assert_allclose(shap.sum(axis=1) + expected_value, raw, rtol=0, atol=1e-6)
    # The values are the sampled test rows themselves (model-input form), in time order.
    position = {a: i for i, a in enumerate(split.test["amount"])}
    positions = [position[a] for a in values["amount"]]
    assert positions == sorted(set(positions))
    # Deterministic sample; the whole frame when it is small enough.
    again, values_again, _ = shap_values(trained, split.test, max_rows=300, seed=3)
    np.testing.assert_array_equal(again, shap)
    assert values_again.equals(values)
    whole, whole_values, _ = shap_values(trained, split.test, max_rows=10_000)
    assert whole.shape[0] == whole_values.height == split.test.height


def test_shap_summary_png(trained, split) -> None:
    shap, values, features = shap_values(trained, split.test, max_rows=200)
    png = plots.shap_summary_png(shap, values, features, max_features=4)
    assert png.startswith(PNG)
    # numpy and list-of-rows inputs, with NaN and categorical values, also draw
    assert plots.shap_summary_png(shap, values.rows(), features).startswith(PNG)
    numeric = values.select(NUMERIC).to_numpy()
    assert plots.shap_summary_png(shap[:, :4], numeric, NUMERIC).startswith(PNG)
    with pytest.raises(ValueError, match="features"):
        plots.shap_summary_png(shap, values, features[:-1])


def test_metrics_by_day_and_metric_over_time_png(trained, split) -> None:
    test = split.test
    scores = predict_proba(trained, test)
    daily = metrics.metrics_by_day(test["is_fraud"], scores, test["event_time"], 5)
    days = test["event_time"].dt.date().unique().sort().to_list()
    assert [d["day"] for d in daily] == [d.isoformat() for d in days]
    assert sum(d["rows"] for d in daily) == test.height
    assert sum(d["positives"] for d in daily) == int(test["is_fraud"].sum())
    for d in daily:
        if d["positives"] == 0:
            assert d["average_precision"] is None and d["recall_at_budget"] is None
        else:
            assert 0.0 <= d["recall_at_budget"] <= 1.0
    png = plots.metric_over_time_png(
        [d["day"] for d in daily],
        {
            "auc_roc": [d["auc_roc"] for d in daily],
            "average_precision": [d["average_precision"] for d in daily],
            "recall_at_budget": [d["recall_at_budget"] for d in daily],
        },
        "Daily metrics (test)",
    )
    assert png.startswith(PNG)


def test_metrics_by_day_one_class_day_is_none() -> None:
    times = np.array(["2026-03-01T10:00", "2026-03-01T11:00", "2026-03-02T09:00"], "datetime64[us]")
    daily = metrics.metrics_by_day([0, 1, 0], [0.2, 0.9, 0.5], times, review_budget_per_day=1)
    assert daily[0] == {
        "day": "2026-03-01",
        "rows": 2,
        "positives": 1,
        "auc_roc": 1.0,
        "average_precision": 1.0,
        "recall_at_budget": 1.0,
    }
    assert daily[1]["auc_roc"] is None and daily[1]["average_precision"] is None
    assert not math.isnan(daily[0]["auc_roc"])
