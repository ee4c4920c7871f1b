"""The compiled one-row path of a baseline (``sklearn_row``) gives scikit-learn's own answer for
every row: the same score, the same transformed columns, for missing numbers, missing and
unseen categories, and a column that was empty when the pipeline was fitted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.model.baseline import LOGREG, SklearnModel
from fraud_platform.lib.training.baselines import BaselineConfig, train_baseline
from fraud_platform.lib.training.fit import Split

NUMERIC = ("amount", "count_1h", "ratio", "always_null")
CATEGORICAL = ("channel", "country")


def _frame(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3, 1.5, rows)
    count = rng.poisson(2, rows).astype(float)
    ratio = rng.normal(0, 1, rows)
    channels = rng.choice(["card", "p2p", "withdrawal"], rows)
    countries = rng.choice(["DE", "FR", "US", "BR"], rows)
    fraud = (amount > 80) & (channels == "p2p") | (rng.random(rows) < 0.03)
    frame = pl.DataFrame(
        {
            "amount": amount,
            "count_1h": np.where(rng.random(rows) < 0.2, np.nan, count),
            "ratio": ratio,
            "always_null": [None] * rows,
            "channel": channels,
            "country": np.where(rng.random(rows) < 0.1, None, countries),
            "is_fraud": fraud,
        },
        schema_overrides={"always_null": pl.Float64},
    )
    return frame.with_columns(pl.col("count_1h").fill_nan(None))


def _model(kind: str) -> SklearnModel:
    frame = _frame(2_000, seed=3)
    now = datetime.now(UTC)
    split = Split(frame, frame, frame, now, now, now, now, now)
    config = BaselineConfig(forest_trees=12, thread_count=1)
    model = train_baseline(kind, split, NUMERIC, CATEGORICAL, config).model
    assert isinstance(model, SklearnModel)
    return model


def _rows() -> list[dict[str, Any]]:
    rows = _frame(300, seed=9).drop("is_fraud").to_dicts()
    rows[0] = {**rows[0], "channel": "crypto", "country": "XX"}  # unseen categories
    rows[1] = {**rows[1], "amount": None, "count_1h": None, "ratio": None, "channel": None}
    rows[2] = {"amount": 12.5}  # everything else absent
    rows[3] = {**rows[3], "always_null": 7.0}
    return rows


@pytest.mark.parametrize("kind", ["logreg", "forest"])
def test_the_compiled_row_score_is_scikit_learns(kind: str) -> None:
    model = _model(kind)
    assert model.row_scorer is not None
    for row in _rows():
        expected = model.pipeline.predict_proba(model.frame(row, allow_missing=True))[0, 1]
        assert model.row_scorer(row) == pytest.approx(expected, rel=0, abs=1e-15), row


def test_the_compiled_transform_is_scikit_learns_column_for_column() -> None:
    model = _model(LOGREG)
    assert model.row_transform is not None
    for row in _rows():
        expected = model.pipeline[:-1].transform(model.frame(row, allow_missing=True))
        np.testing.assert_array_equal(model.row_transform(row), expected)


def test_an_unknown_step_keeps_the_scikit_learn_path() -> None:
    from sklearn.preprocessing import MinMaxScaler

    model = _model(LOGREG)
    fitted_columns = model.pipeline[:1].transform(model.frame(_rows()[4], allow_missing=True))
    model.pipeline.steps[1] = ("scale", MinMaxScaler().fit(np.vstack([fitted_columns] * 2)))
    assert model.row_scorer is None
    row = _rows()[5]
    score = model.predict_scores(row, allow_missing=True)[0]
    assert 0.0 <= score <= 1.0
