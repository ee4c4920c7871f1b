"""Unit tests of fraud_platform.lib.monitoring (whylogs profiles, drift between profiles, skew)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib import plots
from fraud_platform.lib.monitoring.drift import DRIFT, NO_DRIFT, drift_report
from fraud_platform.lib.monitoring.profiles import profile_frame, read_profile, write_profile
from fraud_platform.lib.monitoring.skew import skew_report

COLUMNS = ["amount", "velocity", "country", "merchant_category"]


def make_frame(n: int, seed: int, amount_shift_sd: float = 0.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(50.0 + amount_shift_sd * 10.0, 10.0, n)  # sd = 10
    velocity = rng.poisson(2.0, n).astype(float)
    velocity[rng.uniform(size=n) < 0.05] = np.nan
    return pl.DataFrame(
        {
            "amount": amount,
            "velocity": velocity,
            "country": rng.choice(["DE", "FR", "US", None], n, p=[0.4, 0.3, 0.2, 0.1]).tolist(),
            "merchant_category": rng.choice(["grocery", "travel", "gaming"], n).tolist(),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pl.DataFrame:
    return make_frame(3000, seed=1)


@pytest.fixture(scope="module")
def shifted() -> pl.DataFrame:
    return make_frame(2000, seed=2, amount_shift_sd=3.0)


def test_profile_round_trip(tmp_path: Path, reference: pl.DataFrame) -> None:
    profile = profile_frame(reference, COLUMNS)
    assert profile.rows == reference.height
    amount = profile.columns["amount"]
    assert amount["count"] == reference.height
    assert amount["mean"] == pytest.approx(reference["amount"].mean(), rel=1e-9)
    assert profile.columns["country"]["null_count"] == reference["country"].null_count()
    json.dumps(profile.to_dict(), allow_nan=False)

    path = write_profile(profile, tmp_path / "profiles" / "reference.bin")
    assert path.exists() and path.stat().st_size > 0
    loaded = read_profile(path)
    assert loaded.to_dict() == profile.to_dict()
    assert sorted(loaded.view.get_columns()) == sorted(COLUMNS)


def test_drift_report_flags_shifted_column_only(
    reference: pl.DataFrame, shifted: pl.DataFrame
) -> None:
    report = drift_report(
        profile_frame(reference, COLUMNS), profile_frame(shifted, COLUMNS), COLUMNS
    )
    assert report.columns["amount"].status == DRIFT
    assert report.columns["amount"].psi > 1.0
    for name in ("velocity", "country", "merchant_category"):
        assert report.columns[name].status == NO_DRIFT, report.columns[name]
    assert report.drifted_columns == ["amount"]
    assert report.share_drifted == pytest.approx(1 / 4)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["columns"]["amount"]["algorithm"] == "ks"
    assert payload["columns"]["country"]["algorithm"] == "chi-square"
    assert plots.drift_png(report).startswith(b"\x89PNG")


def test_drift_report_flags_a_feature_going_missing(reference: pl.DataFrame) -> None:
    current = make_frame(2000, seed=3).with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(None)
        .otherwise(pl.col("velocity"))
        .alias("velocity")
    )
    report = drift_report(
        profile_frame(reference, ["velocity"]), profile_frame(current, ["velocity"]), ["velocity"]
    )
    assert report.columns["velocity"].status == DRIFT
    assert report.columns["velocity"].null_pvalue < 0.05


def test_drift_report_from_stored_profiles_agrees(
    tmp_path: Path, reference: pl.DataFrame, shifted: pl.DataFrame
) -> None:
    stored = [
        read_profile(write_profile(profile_frame(frame, COLUMNS), tmp_path / f"{name}.bin"))
        for name, frame in (("reference", reference), ("current", shifted))
    ]
    report = drift_report(*stored, COLUMNS)
    assert report.source == "profiles"
    assert report.drifted_columns == ["amount"]
    assert report.columns["country"].status == NO_DRIFT
    assert report.columns["merchant_category"].kind == "categorical"


def test_skew_report_finds_injected_mismatch() -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    n = 200
    offline = pl.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "event_time": [t0 + timedelta(minutes=i) for i in range(n)],
            "amount_avg_7d": np.linspace(1.0, 100.0, n),
            "velocity_1h": [None if i % 10 == 0 else float(i % 7) for i in range(n)],
            "country": ["DE" if i % 2 else "FR" for i in range(n)],
        }
    )
    served = offline.with_columns(
        # tiny float noise within tolerance; one real mismatch; a served null for a value
        (pl.col("amount_avg_7d") * (1 + 1e-12)).alias("amount_avg_7d"),
        pl.when(pl.col("transaction_id") == "t5")
        .then(pl.lit(99.0))
        .otherwise(pl.col("velocity_1h"))
        .alias("velocity_1h"),
        pl.when(pl.col("transaction_id") == "t7")
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("country"))
        .alias("country"),
    )
    served = pl.concat(
        [served, served.head(1).with_columns(pl.lit("t_unknown").alias("transaction_id"))]
    )
    report = skew_report(
        offline,
        served,
        ["transaction_id", "event_time"],
        ["amount_avg_7d", "velocity_1h", "country"],
    )
    json.dumps(report, allow_nan=False)
    assert report["rows_compared"] == n
    assert report["served_without_offline"] == 1
    assert report["features"]["amount_avg_7d"]["mismatches"] == 0
    velocity = report["features"]["velocity_1h"]
    assert velocity["mismatches"] == 1 and velocity["mismatch_rate"] == pytest.approx(1 / n)
    assert velocity["examples"][0]["transaction_id"] == "t5"
    assert velocity["examples"][0]["served"] == 99.0
    country = report["features"]["country"]
    assert country["mismatches"] == 1 and country["null_mismatches"] == 1
    assert report["features_with_skew"] == ["country", "velocity_1h"]
    assert report["max_mismatch_rate"] == pytest.approx(1 / n)


def test_skew_report_rejects_duplicate_offline_keys() -> None:
    offline = pl.DataFrame({"k": ["a", "a"], "x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="share a key"):
        skew_report(offline, offline.head(1), ["k"], ["x"])
