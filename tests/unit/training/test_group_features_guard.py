"""A training set whose feature-group columns are all null is refused before any model."""

from __future__ import annotations

import polars as pl
import pytest

from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.training.guards import (
    NoGroupFeatures,
    group_feature_columns,
    require_group_features,
)


def frame(value: float | None) -> pl.DataFrame:
    columns = [
        f.name
        for g in FRAUD_SCORING_V1.groups
        for f in g.features
        if f.name in FRAUD_SCORING_V1.model_features
    ]
    data = {name: pl.Series([None, None], dtype=pl.Float64) for name in columns}
    data[columns[-1]] = pl.Series([None, value], dtype=pl.Float64)
    data["amount_zscore_30d"] = pl.Series([1.0, 2.0])  # a request feature: never enough
    return pl.DataFrame(data)


def test_all_null_group_features_are_refused_with_the_groups_named() -> None:
    with pytest.raises(NoGroupFeatures, match="all 39 feature-group columns of the 2 training"):
        require_group_features(frame(None), FRAUD_SCORING_V1)


def test_one_group_value_is_enough() -> None:
    require_group_features(frame(3.0), FRAUD_SCORING_V1)
    # of the 58 model features, 39 come from the groups
    assert len(group_feature_columns(frame(3.0), FRAUD_SCORING_V1)) == 39
