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


def test_drift_check_passes_on_traffic_like_the_reference(files: FilesResource) -> None:
    result = _check(files, traffic(1000, seed=2))
    assert result.passed
    assert result.metadata["columns_compared"].value == len(COLUMNS)
    assert result.metadata["drifted_columns"].value == []
    assert result.metadata["served_rows"].value == 1000


def test_drift_check_fails_when_a_served_feature_shifted(files: FilesResource) -> None:
    result = _check(files, traffic(1000, seed=2, amount_mean=80.0), max_share_drifted=0.3)
    assert not result.passed
    assert result.metadata["drifted_columns"].value == ["amount"]
    assert result.metadata["reference_rows"].value == 3000


def test_drift_check_warns_without_served_profile(files: FilesResource) -> None:
    result = _check(files, None)
    assert result.passed and result.severity.value == "WARN"
    assert result.metadata["served_rows"].value == 0
