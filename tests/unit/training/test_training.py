"""Unit tests of fraud_platform.lib.training.fit on a small synthetic point-in-time frame."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.training.fit import TrainConfig, time_split, train_model

NUMERIC = ["amount", "card_tx_count_1h", "user_amount_avg_7d", "is_new_device"]
CATEGORICAL = ["merchant_category", "country"]
START = datetime(2026, 3, 1, tzinfo=UTC)
FAST = TrainConfig(iterations=40, depth=4, early_stopping_rounds=20, thread_count=1)


def make_frame(n: int = 1600, days: float = 16.0, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.uniform(0, days * 86_400, n))
    amount = rng.lognormal(3.0, 1.0, n)
    velocity = rng.poisson(1.0, n).astype(float)
    avg = rng.lognormal(3.0, 0.5, n)
    new_device = rng.integers(0, 2, n).astype(float)
    category = rng.choice(["grocery", "travel", "electronics", "gaming"], n)
    country = rng.choice(["DE", "FR", "US", None], n)
    logit = -4.0 + 0.8 * velocity + 1.2 * new_device + 1.0 * (category == "gaming")
    is_fraud = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    velocity[rng.uniform(size=n) < 0.05] = np.nan  # numeric nulls stay NaN
    return pl.DataFrame(
        {
            "transaction_id": [f"t{i:05d}" for i in range(n)],
            "event_time": [START + timedelta(seconds=float(s)) for s in seconds],
            "is_fraud": is_fraud,
            "fraud_type": np.where(is_fraud, "card_testing", None).tolist(),
            "channel": rng.choice(["ecommerce", "card_present"], n).tolist(),
            "amount": amount,
            "card_tx_count_1h": velocity,
            "user_amount_avg_7d": avg,
            "is_new_device": new_device,
            "merchant_category": category.tolist(),
            "country": country.tolist(),
        },
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def trained(frame: pl.DataFrame):
    return train_model(time_split(frame, FAST), NUMERIC, CATEGORICAL, FAST)


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
