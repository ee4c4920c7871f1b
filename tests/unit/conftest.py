"""Fixtures of more than one unit-test domain: the synthetic training frame and a model
trained on it (``frame`` and ``trained``; a module may define its own)."""

from __future__ import annotations

import polars as pl
import pytest

from fraud_platform.lib.model.input import TrainedModel
from fraud_platform.lib.training.fit import time_split, train_model
from tests.unit.training.synthetic import CATEGORICAL, FAST, NUMERIC, make_frame


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame()


@pytest.fixture(scope="module")
def trained(frame: pl.DataFrame) -> TrainedModel:
    return train_model(time_split(frame, FAST), NUMERIC, CATEGORICAL, FAST)
