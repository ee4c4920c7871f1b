"""The training row budget: negative downsampling with inverse-rate weights (``sampling.py``)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from fraud_platform.defs.serving.assets import backtest_rows
from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import metrics
from fraud_platform.lib.training.fit import time_split, train_model
from fraud_platform.lib.training.pipeline import PipelineConfig, train_and_evaluate
from fraud_platform.lib.training.sampling import (
    SAMPLE_WEIGHT,
    RowBudget,
    downsample_legit,
)
from fraud_platform.names import TRAINING_SET_TABLE

from .synthetic import CATEGORICAL, FAST, NUMERIC, START, make_frame

WHOLE_DAYS = FAST.evaluation_days  # 10: validation 3 + test 5 + two gaps of 1


@pytest.fixture(scope="module")
def big() -> pl.DataFrame:
    return make_frame(n=24_000, days=40.0, seed=11)


def _before_window(frame: pl.DataFrame, whole_days: float) -> pl.Expr:
    newest = frame["event_time"].max()
    return pl.col("event_time") < newest - timedelta(days=whole_days)  # type: ignore[operator]


def test_within_the_budget_nothing_changes(big: pl.DataFrame) -> None:
    done = downsample_legit(big, RowBudget(max_rows=big.height, whole_days=WHOLE_DAYS))
    assert done.dropped == 0 and done.legit_rate == 1.0
    assert done.frame.equals(big)
    assert SAMPLE_WEIGHT not in done.frame.columns


def test_above_the_budget_frauds_and_the_newest_days_stay_whole(big: pl.DataFrame) -> None:
    budget = RowBudget(max_rows=3_000, whole_days=WHOLE_DAYS, seed=3)
    done = downsample_legit(big, budget)
    before = _before_window(big, WHOLE_DAYS)
    old_legit = big.filter(before & ~pl.col("is_fraud"))
    old_frauds = big.filter(before & pl.col("is_fraud")).height
    out = done.frame
    # the fitted part is exactly at the budget; frauds and the window are all there
    assert out.filter(before).height == budget.max_rows
    assert out.filter(pl.col("is_fraud")).height == big.filter(pl.col("is_fraud")).height
    assert out.filter(~before)["transaction_id"].to_list() == (
        big.filter(~before)["transaction_id"].to_list()
    )
    kept_legit = out.filter(before & ~pl.col("is_fraud"))
    assert kept_legit.height == budget.max_rows - old_frauds
    assert done.dropped == old_legit.height - kept_legit.height
    # each sampled legitimate row stands for 1/rate rows: the weights restore the class counts
    assert kept_legit[SAMPLE_WEIGHT].unique().to_list() == [
        pytest.approx(old_legit.height / kept_legit.height)
    ]
    assert kept_legit[SAMPLE_WEIGHT].sum() == pytest.approx(old_legit.height)
    assert set(out.filter(~before | pl.col("is_fraud"))[SAMPLE_WEIGHT].to_list()) == {1.0}
    assert out["event_time"].is_sorted()
    # the same seed draws the same rows, another seed others
    again = downsample_legit(big, budget).frame
    assert again["transaction_id"].to_list() == out["transaction_id"].to_list()
    other = downsample_legit(big, dataclasses.replace(budget, seed=4)).frame
    assert other["transaction_id"].to_list() != out["transaction_id"].to_list()


def test_a_budget_below_the_frauds_is_refused(big: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="raise max_train_rows"):
        downsample_legit(big, RowBudget(max_rows=5, whole_days=WHOLE_DAYS))


def test_weighted_average_precision_is_scikit_learns() -> None:
    rng = np.random.default_rng(5)
    y = rng.uniform(size=3_000) < 0.1
    scores = np.round(rng.uniform(size=3_000) + 0.3 * y, 2)  # ties included
    weights = rng.choice([1.0, 7.5], size=3_000)
    assert metrics.average_precision(y, scores, sample_weight=weights) == pytest.approx(
        average_precision_score(y, scores, sample_weight=weights)
    )
    assert metrics.average_precision(y, scores) == pytest.approx(average_precision_score(y, scores))


def test_weights_keep_the_fitted_scores_on_the_true_fraud_rate(big: pl.DataFrame) -> None:
    """A fit on the downsampled rows with their weights scores the (whole) test days at about
    the true fraud rate; the same rows without weights overstate it by the sampling factor."""
    done = downsample_legit(big, RowBudget(max_rows=3_000, whole_days=WHOLE_DAYS))
    assert done.legit_rate < 0.25
    split = time_split(done.frame, FAST)
    unweighted = dataclasses.replace(split, train=split.train.drop(SAMPLE_WEIGHT))
    test_rate = split.test["is_fraud"].mean()
    weighted_mean = predict_proba(train_model(split, NUMERIC, CATEGORICAL, FAST), split.test)
    unweighted_mean = predict_proba(train_model(unweighted, NUMERIC, CATEGORICAL, FAST), split.test)
    assert abs(weighted_mean.mean() - test_rate) < 0.5 * test_rate
    assert unweighted_mean.mean() > 2 * test_rate


def test_the_pipeline_trains_on_a_downsampled_set_and_refuses_weighted_test_rows(
    big: pl.DataFrame,
) -> None:
    config = PipelineConfig(train=FAST)
    done = downsample_legit(big, RowBudget(max_rows=3_000, whole_days=WHOLE_DAYS))
    result = train_and_evaluate(done.frame, NUMERIC, CATEGORICAL, config)
    assert result.split.train.height == 3_000
    assert result.metrics["auc_roc"] > 0.7
    too_few_whole = downsample_legit(big, RowBudget(max_rows=3_000, whole_days=2.0))
    with pytest.raises(ValueError, match="the validation part holds downsampled rows"):
        train_and_evaluate(too_few_whole.frame, NUMERIC, CATEGORICAL, config)


def test_a_backtest_of_the_training_set_refuses_downsampled_days(
    big: pl.DataFrame, tmp_path: Path
) -> None:
    delta = DeltaStore(str(tmp_path))
    done = downsample_legit(big, RowBudget(max_rows=3_000, whole_days=WHOLE_DAYS))
    delta.overwrite(TRAINING_SET_TABLE, done.frame)
    rows, _, _ = backtest_rows("training_set", None, None, 7.0, delta, None)  # newest 7 days
    assert rows.height == done.frame.height
    old_days = (START + timedelta(days=5), START + timedelta(days=12))
    with pytest.raises(ValueError, match="backtest older days with source 'silver'"):
        backtest_rows("training_set", *old_days, 7.0, delta, None)
