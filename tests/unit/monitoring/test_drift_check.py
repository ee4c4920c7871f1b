"""The drift check reads the two profiles the monitoring assets write, nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fraud_platform.defs.monitoring.assets import (
    SERVED_PROFILE_FILE,
    TRAINING_PROFILE_FILE,
    DriftConfig,
    served_features_have_not_drifted,
)
from fraud_platform.lib.monitoring.profiles import profile_frame, write_profile
from fraud_platform.resources import FilesResource

COLUMNS = ["amount", "hour_of_day", "channel"]


def traffic(n: int, seed: int, amount_mean: float = 50.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "amount": rng.normal(amount_mean, 10.0, n),
            "hour_of_day": rng.integers(0, 24, n),
            "channel": rng.choice(["ecommerce", "card_present", "p2p"], n).tolist(),
        }
    )


@pytest.fixture
def files(tmp_path: Path) -> FilesResource:
    files = FilesResource(root=str(tmp_path))
    write_profile(profile_frame(traffic(3000, seed=1), COLUMNS), files.path(*TRAINING_PROFILE_FILE))
    return files


def _check(files: FilesResource, served: pl.DataFrame | None, **config: float):
    if served is not None:
        write_profile(profile_frame(served, COLUMNS), files.path(*SERVED_PROFILE_FILE))
    return served_features_have_not_drifted(config=DriftConfig(**config), files=files)


def _meta(result) -> dict:
    return {k: v.value for k, v in result.metadata.items()}


def test_drift_check_passes_on_traffic_like_the_reference(files: FilesResource) -> None:
    result = _check(files, traffic(1000, seed=2))
    assert result.passed
    meta = _meta(result)
    assert meta["status"] == "PASS" and meta["value"] == 0.0
    assert meta["columns_compared"] == len(COLUMNS)
    assert meta["drifted_columns"] == []
    assert meta["served_rows"] == 1000


def test_drift_check_fails_when_a_served_feature_shifted(files: FilesResource) -> None:
    result = _check(files, traffic(1000, seed=2, amount_mean=80.0), max_share_drifted=0.3)
    assert not result.passed and result.severity.value == "ERROR"
    meta = _meta(result)
    assert meta["drifted_columns"] == ["amount"]
    assert meta["status"] == "FAIL" and meta["value"] == pytest.approx(1 / 3)
    assert meta["threshold"] == 0.3
    assert meta["reference_rows"] == 3000


def test_drift_under_the_failing_threshold_warns_and_says_so(files: FilesResource) -> None:
    """The bug this guards: one drifted column of three under a 0.5 threshold showed "Passed"
    beside a plot saying 33% drifted. Now: a warning, and status, metadata and plot agree."""
    result = _check(
        files,
        traffic(1000, seed=2, amount_mean=80.0),
        max_share_drifted=0.5,
        warn_share_drifted=0.1,
    )
    assert not result.passed and result.severity.value == "WARN"
    meta = _meta(result)
    assert meta["status"] == "WARN"
    assert meta["value"] == meta["share_drifted"] == pytest.approx(1 / 3)
    assert (meta["threshold"], meta["warn_threshold"]) == (0.5, 0.1)
    assert (
        result.description
        == meta["summary"]
        == ("share_drifted = 0.3333 (warn > 0.1, fail > 0.5): WARN")
    )
    assert meta["plot"].startswith(f"![{meta['summary']}](data:image/png;base64,")


def test_drift_check_without_served_profile_is_not_judged(files: FilesResource) -> None:
    result = _check(files, None)
    assert result.passed
    meta = _meta(result)
    assert meta["status"] == "NOT_JUDGED" and meta["value"] is None
    assert meta["served_rows"] == 0
    assert "fewer than min_served_rows=200" in result.description
