"""daily_feature_drift judges a day against the served days before it once there are enough of
them (calibrated limits), else against the training reference; the status, the metadata and the
threshold shown agree."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from fraud_platform.defs.monitoring.assets import TRAINING_PROFILE_FILE
from fraud_platform.defs.monitoring.daily import (
    FEATURE_DRIFT_CHECK,
    daily_feature_drift,
    daily_profile_file,
)
from fraud_platform.lib.monitoring.profiles import profile_frame, write_profile
from fraud_platform.resources import DeltaResource, FilesResource

COLUMNS = ["amount", "channel", "user_txn_count_24h", "merchant_txn_count_30d"]
FIRST = date(2026, 11, 1)


def traffic(seed: int, *, age: int = 0, switched: bool = False, n: int = 1200) -> pl.DataFrame:
    """One day: ``merchant_txn_count_30d`` grows with ``age`` (a 30-day window filling up);
    the switch raises amounts 30% and moves the channel mix towards p2p."""
    rng = np.random.default_rng(seed)
    p2p = 0.36 if switched else 0.2
    rest = (1.0 - p2p) / 2
    return pl.DataFrame(
        {
            "amount": rng.lognormal(3.5, 0.8, n) * (1.3 if switched else 1.0),
            "channel": rng.choice(["ecommerce", "card_present", "p2p"], n, p=[rest, rest, p2p]),
            "user_txn_count_24h": rng.poisson(3.0, n).astype(float),
            "merchant_txn_count_30d": rng.poisson(100 + 8 * age, n).astype(float),
        }
    )


@pytest.fixture
def files(tmp_path: Path) -> FilesResource:
    files = FilesResource(root=str(tmp_path))
    write_profile(profile_frame(traffic(1), COLUMNS), files.path(*TRAINING_PROFILE_FILE))
    return files


def judge(files: FilesResource, tmp_path: Path, days: dict[date, pl.DataFrame], target: date):
    for day, frame in days.items():
        write_profile(profile_frame(frame, COLUMNS), files.path(*daily_profile_file(day)))
    result = dg.materialize(
        [daily_feature_drift],
        partition_key=target.isoformat(),
        resources={"delta": DeltaResource(root=str(tmp_path / "delta")), "files": files},
    )
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == FEATURE_DRIFT_CHECK
    return check, {k: v.value for k, v in check.metadata.items()}


def history(days: int) -> dict[date, pl.DataFrame]:
    return {FIRST + timedelta(days=d): traffic(10 + d, age=d + 10) for d in range(days)}


def test_a_normal_day_passes_against_its_history_although_a_feature_ages(
    files: FilesResource, tmp_path: Path
) -> None:
    target = FIRST + timedelta(days=7)
    days = {**history(7), target: traffic(99, age=17)}
    check, meta = judge(files, tmp_path, days, target)
    assert check.passed and meta["status"] == "PASS", meta["summary"]
    assert meta["reference"] == "served traffic of the 7 previous days"
    assert meta["threshold"] == 0.1 and meta["history_days"] == 7


def test_a_switch_fails_on_its_first_day(files: FilesResource, tmp_path: Path) -> None:
    target = FIRST + timedelta(days=7)
    days = {**history(7), target: traffic(99, age=17, switched=True)}
    check, meta = judge(files, tmp_path, days, target)
    assert not check.passed and meta["status"] == "FAIL", meta["summary"]
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert {"amount", "channel"} <= set(meta["drifted_columns"])
    assert meta["value"] > meta["threshold"] and f"fail > {meta['threshold']}" in meta["summary"]


def test_less_than_a_week_of_history_falls_back_to_the_training_reference(
    files: FilesResource, tmp_path: Path
) -> None:
    target = FIRST + timedelta(days=6)
    days = {**history(6), target: traffic(99, age=16)}
    check, meta = judge(files, tmp_path, days, target)
    assert meta["reference"] == "training profile" and meta["history_days"] == 6
    assert meta["threshold"] == 0.3  # the training reference's own (wider) threshold
    # the ageing feature drifts against a reference weeks old: shown, judged by that threshold
    assert "merchant_txn_count_30d" in meta["drifted_columns"]
    assert check.passed == (meta["status"] in ("PASS", "NOT_JUDGED"))
