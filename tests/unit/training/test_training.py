"""Unit tests of fraud_platform.lib.training.fit on a small synthetic point-in-time frame."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.training.fit import TrainConfig, time_split, train_model
from tests.unit.training.synthetic import CATEGORICAL, FAST, NUMERIC


def test_time_split_boundaries_respect_gaps_and_order(frame: pl.DataFrame) -> None:
    # Shuffle: the split must sort by event_time itself.
    split = time_split(frame.sample(fraction=1.0, shuffle=True, seed=1), FAST)
    t = "event_time"
    assert split.train[t].max() < split.train_end
    assert split.validation[t].min() >= split.validation_start
    assert split.validation[t].max() < split.validation_end
    assert split.test[t].min() >= split.test_start
    assert split.test_end == frame[t].max()
    # Gaps of gap_days between parts, and test is the latest part.
    assert split.validation_start - split.train_end == timedelta(days=FAST.gap_days)
    assert split.test_start - split.validation_end == timedelta(days=FAST.gap_days)
    assert split.test_end - split.test_start == timedelta(days=FAST.test_days)
    assert split.train[t].max() < split.validation[t].min() < split.test[t].min()
    assert split.validation[t].min() - split.train[t].max() >= timedelta(days=FAST.gap_days)
    assert split.test[t].min() - split.validation[t].max() >= timedelta(days=FAST.gap_days)
    ids = [set(p["transaction_id"]) for p in (split.train, split.validation, split.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    summary = split.summary()
    assert summary["test"]["rows"] == split.test.height
    assert summary["train"]["positives"] > 0
    assert sum(len(s) for s in ids) + split.gap_rows == frame.height


def test_time_split_raises_on_empty_part(frame: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="train part .* has no rows"):
        time_split(frame, TrainConfig(test_days=10, validation_days=5, gap_days=1))


def test_time_split_raises_on_part_without_fraud(frame: pl.DataFrame) -> None:
    cutoff = time_split(frame, FAST).test_start
    no_fraud_in_test = frame.with_columns(
        pl.when(pl.col("event_time") >= cutoff)
        .then(False)
        .otherwise(pl.col("is_fraud"))
        .alias("is_fraud")
    )
    with pytest.raises(ValueError, match="test part .* no positive"):
        time_split(no_fraud_in_test, FAST)


def test_train_model_is_deterministic_for_a_seed(frame: pl.DataFrame, trained) -> None:
    messages: list[str] = []
    again = train_model(time_split(frame, FAST), NUMERIC, CATEGORICAL, FAST, log=messages.append)
    np.testing.assert_array_equal(predict_proba(trained, frame), predict_proba(again, frame))
    assert again.best_iteration == trained.best_iteration
    assert trained.features == tuple(NUMERIC + CATEGORICAL)
    assert messages and messages[0].startswith("training CatBoost")


def test_train_model_rejects_label_as_feature(frame: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="cannot be features"):
        train_model(time_split(frame, FAST), [*NUMERIC, "is_fraud"], CATEGORICAL, FAST)
