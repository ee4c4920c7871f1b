"""calibrated_drift: a day against the days before it, each feature by its own PSI limit."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.monitoring.profiles import merge_profiles, profile_frame
from fraud_platform.lib.monitoring.recent_drift import calibrated_drift

COLUMNS = ["amount", "noisy", "steady", "channel"]


def day(seed: int, n: int = 1500, *, amount_scale: float = 1.0, p2p: float = 0.2) -> pl.DataFrame:
    """One day of traffic: ``noisy`` jumps from day to day (a per-day level, like a count over
    a handful of big merchants), ``steady`` does not."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(1.0, 3.0)
    other = (1.0 - p2p) / 2
    return pl.DataFrame(
        {
            "amount": rng.lognormal(3.5, 0.8, n) * amount_scale,
            "noisy": rng.poisson(level * 10, n).astype(float),
            "steady": rng.normal(0.0, 1.0, n),
            "channel": rng.choice(["ecommerce", "card_present", "p2p"], n, p=[other, other, p2p]),
        }
    )


def profiles(frames: list[pl.DataFrame]):
    return [profile_frame(f, COLUMNS) for f in frames]


def test_merge_profiles_counts_every_row() -> None:
    merged = merge_profiles(profiles([day(1, 300), day(2, 500)]))
    assert merged.rows == 800
    with pytest.raises(ValueError):
        merge_profiles([])


def test_a_day_like_its_history_does_not_drift_although_a_feature_jumps_daily() -> None:
    history = profiles([day(s) for s in range(10, 17)])
    result = calibrated_drift(history, profiles([day(99)])[0], COLUMNS)
    assert result.drifted_columns == [], result.to_dict()
    # the daily jumps of "noisy" widened its limit far above the steady features' floor
    assert result.limits["noisy"] > 5 * result.limits["steady"]
    assert result.limits["steady"] == pytest.approx(0.02)


def test_a_switch_is_flagged_on_its_first_day_in_the_features_that_moved() -> None:
    history = profiles([day(s) for s in range(10, 17)])
    switched = profiles([day(99, amount_scale=1.3, p2p=0.36)])[0]
    result = calibrated_drift(history, switched, COLUMNS)
    assert set(result.drifted_columns) == {"amount", "channel"}, result.to_dict()
    assert result.share_drifted == 0.5
    column = result.to_dict()["columns"]["channel"]
    assert column["psi"] > column["psi_limit"] and column["pvalue"] < 0.05


def test_calibrated_drift_needs_two_history_days() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        calibrated_drift(profiles([day(1)]), profiles([day(2)])[0], COLUMNS)
