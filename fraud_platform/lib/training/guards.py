"""Refusals before a model is trained on data that cannot carry it."""

from __future__ import annotations

import polars as pl

from fraud_platform.lib.features.registry import FeatureService


class NoGroupFeatures(ValueError):
    """Every feature-group column of the training set is null: a model would learn nothing."""


def group_feature_columns(frame: pl.DataFrame, service: FeatureService) -> list[str]:
    """The model's columns that come from the service's feature groups (not request features)."""
    return [
        f.name
        for group in service.groups
        for f in group.features
        if f.name in service.model_features and f.name in frame.columns
    ]


def require_group_features(frame: pl.DataFrame, service: FeatureService) -> None:
    """Raise ``NoGroupFeatures`` when the frame has rows and all its group features are null
    (e.g. the events lie outside the feature partitions, so no feature row was ever computed)."""
    columns = group_feature_columns(frame, service)
    if not frame.height or not columns:
        return
    filled = frame.select(pl.col(columns).is_not_null().any()).row(0)
    if not any(filled):
        raise NoGroupFeatures(
            f"all {len(columns)} feature-group columns of the {frame.height:,} training rows are "
            f"null ({', '.join(service.group_names)}): the feature tables hold no rows for these "
            "transactions' times. Materialize the features layer over the data's dates first "
            "(see FRAUD_PLATFORM_PARTITIONS_START)."
        )
