"""Unit tests of fraud_platform.lib.model: one model-input conversion for batch and online rows,
and the top SHAP reasons of one row."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.model.explain import top_reasons
from fraud_platform.lib.model.input import (
    MISSING_CATEGORY,
    OneRowPredictor,
    predict_proba,
    to_model_input,
)
from tests.unit.training.synthetic import CATEGORICAL, NUMERIC


def test_predict_proba_single_row_equals_batch(frame: pl.DataFrame, trained) -> None:
    batch = predict_proba(trained, frame)
    assert batch.shape == (frame.height,)
    assert np.all((batch > 0) & (batch < 1))
    # A few rows incl. one with a null categorical and one with a NaN numeric.
    picks = [
        0,
        frame.with_row_index().filter(pl.col("country").is_null())["index"][0],
        frame.with_row_index().filter(pl.col("card_tx_count_1h").is_nan())["index"][0],
    ]
    for i in picks:
        row = frame.row(int(i), named=True)
        online = dict(row)
        if online["card_tx_count_1h"] != online["card_tx_count_1h"]:
            online["card_tx_count_1h"] = None  # the service sends null, not NaN
        assert predict_proba(trained, online)[0] == batch[i]
        assert predict_proba(trained, [online])[0] == batch[i]
        assert predict_proba(trained.model, online)[0] == batch[i]  # raw CatBoost model
        assert predict_proba(trained, frame.slice(int(i), 1))[0] == batch[i]


def test_to_model_input_missing_key_raises_unless_allowed() -> None:
    row = {"amount": 12.5, "merchant_category": None}
    with pytest.raises(KeyError, match="country"):
        to_model_input(row, ["amount", "merchant_category", "country"], ["merchant_category"])
    pool = to_model_input(
        row,
        ["amount", "merchant_category", "country"],
        ["country", "merchant_category"],
        allow_missing=True,
    )
    assert pool.num_row() == 1 and pool.num_col() == 3
    assert pool.get_cat_feature_indices() == [1, 2]
    assert MISSING_CATEGORY == "__missing__"


def test_top_reasons_returns_k_features_from_the_list(frame: pl.DataFrame, trained) -> None:
    scores = predict_proba(trained, frame)
    row = frame.row(int(np.argmax(scores)), named=True)
    reasons = top_reasons(trained, row, k=3)
    assert len(reasons) == 3
    assert all(r["feature"] in NUMERIC + CATEGORICAL for r in reasons)
    assert len({r["feature"] for r in reasons}) == 3
    contributions = [r["contribution"] for r in reasons]
    assert contributions == sorted(contributions, reverse=True) and contributions[-1] > 0
    for r in reasons:
        expected = row[r["feature"]]
        if r["feature"] in CATEGORICAL:
            assert r["value"] == (MISSING_CATEGORY if expected is None else expected)
        else:
            assert r["value"] == pytest.approx(expected, nan_ok=True) or r["value"] is None


def test_one_row_predictor_is_bit_identical_to_predict_proba(frame: pl.DataFrame, trained) -> None:
    """The service's one-row path (no feature names, signature read once) gives exactly the
    score of ``predict_proba``, on every row (nulls, NaN-as-None) and the raw CatBoost model."""
    batch = predict_proba(trained, frame)
    predictors = (OneRowPredictor(trained), OneRowPredictor(trained.model))
    for i, row in enumerate(frame.iter_rows(named=True)):
        online = {k: (None if v != v else v) for k, v in row.items()}  # NaN -> null, as served
        expected = predict_proba(trained, online, allow_missing=True)[0]
        assert expected == batch[i]
        for predict in predictors:
            assert predict(online) == expected
    sparse = {NUMERIC[0]: 1.0}  # features absent: null, as predict_proba(allow_missing=True)
    assert predictors[0](sparse) == predict_proba(trained, sparse, allow_missing=True)[0]


# Run in a fresh process: a model loaded from file (as the service does), no training there.
_THREADS_PROBE = """
import json, os, sys
from catboost import CatBoostClassifier
from fraud_platform.lib.model.explain import top_reasons
from fraud_platform.lib.model.input import OneRowPredictor, predict_proba

model = CatBoostClassifier()
model.load_model(sys.argv[1])
rows = json.loads(sys.argv[2])
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
predict = OneRowPredictor(model)
for row in rows:
    predict(row)
    predict_proba(model, row, allow_missing=True)
    top_reasons(model, row, k=3, allow_missing=True, shap_calc_type="Approximate")
predict_proba(model, rows, allow_missing=True)
print(json.dumps({"before": before, "after": threads()}))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="Linux /proc only")
def test_small_inputs_start_no_catboost_threads(frame: pl.DataFrame, trained, tmp_path) -> None:
    """One-row (and small) predictions and explanations run on the calling thread. A Pool built
    with CatBoost's default thread_count (-1) starts executor threads that then spin on every
    call (~0.7 ms of CPU per one-row prediction in the service): none may appear."""
    path = tmp_path / "model.cbm"
    trained.model.save_model(str(path))
    rows = [
        {k: (None if v != v else v) for k, v in row.items()}
        for row in frame.head(5).iter_rows(named=True)
    ]
    done = subprocess.run(
        [sys.executable, "-c", _THREADS_PROBE, str(path), json.dumps(rows, default=str)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    assert counts["after"] == counts["before"], counts
