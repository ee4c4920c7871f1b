"""A small synthetic point-in-time training frame and a fast training config, shared by the
training and model-input tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from fraud_platform.lib.training.fit import TrainConfig

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
