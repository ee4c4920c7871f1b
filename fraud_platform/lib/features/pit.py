"""Point-in-time join: the feature values each entity row could have known at its time.

For a row at time ``t`` and each group, take the group's latest row of the same entity with
``feature_time < t`` (strictly: equal timestamps are NOT visible, so an event never sees
itself) and ``t - feature_time <= ttl``; otherwise the group's features are null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from fraud_platform.lib.features.compute import entity_key_expr
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup


def point_in_time_join(
    entity_rows: pl.DataFrame,
    groups: Sequence[FeatureGroup],
    group_rows: Mapping[str, pl.DataFrame | pl.LazyFrame],
    *,
    time_column: str = "event_time",
    features: Sequence[str] | None = None,
) -> pl.DataFrame:
    """``entity_rows`` (join keys + ``time_column``) with every group's features attached.

    ``group_rows`` maps a group's versioned name to its offline rows (``compute_feature_group``
    output). ``features`` restricts the columns fetched. Row order of ``entity_rows`` is kept.
    """
    wanted = set(features) if features is not None else None
    order_col = "__row_nr"
    result = entity_rows.lazy().with_row_index(order_col).sort(time_column)
    for group in groups:
        names = [n for n in group.feature_names if wanted is None or n in wanted]
        if not names:
            continue
        key_col = f"__key_{group.versioned_name}"
        time_col = f"__ft_{group.versioned_name}"
        right = (
            group_rows[group.versioned_name]
            .lazy()
            .select(
                pl.col(ENTITY_KEY).alias(key_col),
                pl.col(FEATURE_TIME).alias(time_col),
                *names,
            )
            .sort(time_col)
        )
        result = (
            result.with_columns(entity_key_expr(group.entity.join_keys).alias(key_col))
            .join_asof(
                right,
                left_on=time_column,
                right_on=time_col,
                by=key_col,
                strategy="backward",
                allow_exact_matches=False,
                check_sortedness=False,
            )
            .with_columns(
                [
                    pl.when(pl.col(time_column) - pl.col(time_col) <= group.ttl)
                    .then(pl.col(n))
                    .otherwise(None)
                    .alias(n)
                    for n in names
                ]
            )
            .drop(key_col, time_col)
        )
    return result.sort(order_col).drop(order_col).collect()
