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

_ROW, _MATCH, _KEY, _TIME = "__row", "__match", "__key", "__feature_time"


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

    Only narrow frames are sorted and joined: per group, an as-of join of (entity key, time)
    against (entity key, feature_time, row number) finds the matching feature row of each
    entity row (the TTL is the join's tolerance); the feature columns are then gathered once,
    directly in the entity rows' order.
    """
    wanted = set(features) if features is not None else None
    keys = sorted({k for g in groups for k in g.entity.join_keys})
    left = (
        entity_rows.lazy()
        .select(time_column, *keys)
        .with_row_index(_ROW)
        .sort(time_column)
        .collect(engine="in-memory")
    )
    # where each entity row went in the time order: gathers the matches back in row order
    back_to_row_order = left[_ROW].arg_sort()
    parts = [entity_rows]
    for group in groups:
        names = [n for n in group.feature_names if wanted is None or n in wanted]
        if not names:
            continue
        rows = (
            group_rows[group.versioned_name]
            .lazy()
            .select(ENTITY_KEY, FEATURE_TIME, *names)
            .collect(engine="in-memory")
        )
        right = rows.select(
            pl.col(ENTITY_KEY).alias(_KEY), pl.col(FEATURE_TIME).alias(_TIME)
        ).with_row_index(_MATCH)
        if not right[_TIME].is_sorted():  # offline tables are written in feature_time order
            right = right.sort(_TIME)
        matched = (
            left.select(time_column, entity_key_expr(group.entity.join_keys).alias(_KEY)).join_asof(
                right,
                left_on=time_column,
                right_on=_TIME,
                by=_KEY,
                strategy="backward",
                allow_exact_matches=False,  # strictly before: an event never sees itself
                check_sortedness=False,
                tolerance=group.ttl,  # t - feature_time <= ttl, else no match (nulls)
            )
        )[_MATCH].gather(back_to_row_order)
        parts.append(rows.select(pl.col(names).gather(matched)))
    return pl.concat(parts, how="horizontal")
