"""Unit tests of fraud_platform.lib.training.search (Optuna search on time-ordered folds of split.train)."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.training.fit import TrainConfig, time_split, train_model
from fraud_platform.lib.training.search import (
    SearchResult,
    search_hyperparameters,
    time_folds,
    to_train_config,
)
from tests.unit.training.synthetic import CATEGORICAL, NUMERIC, make_frame

BASE = TrainConfig(iterations=40, depth=4, early_stopping_rounds=15, thread_count=1)


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame(n=3000, days=20.0, seed=11)


@pytest.fixture(scope="module")
def split(frame: pl.DataFrame):
    return time_split(frame, BASE)


@pytest.fixture(scope="module")
def result(split) -> SearchResult:
    lines: list[str] = []
    out = search_hyperparameters(
        split, NUMERIC, CATEGORICAL, BASE, n_trials=4, time_budget_s=None, seed=7, log=lines.append
    )
    # One line per trial plus a header and a closing line.
    trial_lines = [line for line in lines if line.startswith("trial ")]
    assert len(trial_lines) == 4
    assert trial_lines[0].startswith("trial 1/4: AP ")
    assert "(best " in trial_lines[-1] and "depth=" in trial_lines[-1]
    return out


def test_search_is_deterministic_for_a_fixed_seed_and_trial_count(split, result) -> None:
    again = search_hyperparameters(
        split, NUMERIC, CATEGORICAL, BASE, n_trials=4, time_budget_s=None, seed=7
    )
    assert result.stopped_by == again.stopped_by == "trials"
    assert len(result.trials) == len(again.trials) == 4
    assert again.best_params == result.best_params
    assert again.best_value == result.best_value
    assert [t["value"] for t in again.trials] == [t["value"] for t in result.trials]
    assert [t["params"] for t in again.trials] == [t["params"] for t in result.trials]
    assert set(result.best_params) == {
        "depth",
        "learning_rate",
        "l2_leaf_reg",
        "auto_class_weights",
    }
    assert result.best_value == max(t["value"] for t in result.trials)
    assert 0.0 < result.best_value <= 1.0
    # A different seed samples different parameters.
    other = search_hyperparameters(
        split, NUMERIC, CATEGORICAL, BASE, n_trials=1, time_budget_s=None, seed=8
    )
    assert other.trials[0]["params"] != result.trials[0]["params"]


def test_folds_are_time_ordered_gapped_and_inside_split_train(frame, split, result) -> None:
    folds = result.folds
    assert len(folds) == 3
    gap = timedelta(days=BASE.gap_days)
    t = pl.col("event_time")
    first = split.train["event_time"].min()
    previous_end = None
    for k, fold in enumerate(folds):
        assert fold["index"] == k
        assert fold["train_start"] == first
        assert fold["validation_start"] - fold["train_end"] == gap
        assert fold["validation_start"] < fold["validation_end"] <= split.train_end
        if previous_end is not None:  # expanding window, validation blocks in time order
            assert fold["train_end"] > folds[k - 1]["train_end"]
            assert fold["validation_start"] >= previous_end - gap
        previous_end = fold["validation_end"]
        # Counts on the whole frame agree: no validation row is after split.train, none in the gap.
        fold_train = frame.filter(t < fold["train_end"])
        fold_val = frame.filter((t >= fold["validation_start"]) & (t < fold["validation_end"]))
        assert fold_train.height == fold["train_rows"]
        assert fold_val.height == fold["validation_rows"]
        assert fold_val.height > 0 and fold["validation_positives"] > 0
        assert fold_val["event_time"].max() < split.train_end
        assert fold_val["event_time"].max() < split.validation["event_time"].min()
        assert fold_train["event_time"].max() < fold["train_end"]
        in_gap = frame.filter((t >= fold["train_end"]) & (t < fold["validation_start"]))
        assert set(in_gap["transaction_id"]).isdisjoint(fold_train["transaction_id"])
        assert set(in_gap["transaction_id"]).isdisjoint(fold_val["transaction_id"])
    assert folds[-1]["validation_end"] == split.train_end
    summary = result.summary()
    assert summary["trials"] == 4 and summary["stopped_by"] == "trials"
    assert isinstance(summary["folds"][0]["train_end"], str)


def test_time_folds_refuse_blocks_without_fraud(split) -> None:
    no_fraud = split.train.with_columns(pl.lit(False).alias("is_fraud"))
    with pytest.raises(ValueError, match="needs both classes"):
        time_folds(no_fraud, split.train_end, 3, 1.0)
    with pytest.raises(ValueError, match="not more than one gap"):
        time_folds(split.train, split.train_end, 3, 30.0)


def test_time_budget_stops_the_search_gracefully(split) -> None:
    out = search_hyperparameters(
        split, NUMERIC, CATEGORICAL, BASE, n_trials=500, time_budget_s=0.5, seed=7
    )
    assert out.stopped_by == "time_budget"
    assert 1 <= len(out.trials) < 500
    assert out.best_params and 0.0 < out.best_value <= 1.0


def test_best_params_give_a_train_config_that_trains(split, result) -> None:
    config = to_train_config(result.best_params, BASE)
    assert config.depth == result.best_params["depth"]
    assert config.learning_rate == result.best_params["learning_rate"]
    assert config.auto_class_weights == result.best_params["auto_class_weights"]
    assert (config.iterations, config.seed, config.thread_count) == (40, 42, 1)
    trained = train_model(split, NUMERIC, CATEGORICAL, config)
    assert trained.params["depth"] == config.depth
    scores = predict_proba(trained, split.test)
    assert scores.shape == (split.test.height,)
    with pytest.raises(ValueError, match="not searched"):
        to_train_config({"iterations": 5}, BASE)
