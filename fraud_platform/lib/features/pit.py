"""Point-in-time join: the feature values each entity row could have known at its time.

For a row at time ``t`` and each group, take the group's latest row of the same entity with
``feature_time < t`` (strictly: equal timestamps are NOT visible, so an event never sees
itself) and ``t - feature_time <= ttl``; otherwise the group's features are null. Lifetime
features are that row's values; windowed ones are evaluated at ``t`` over ``(t - w, t)``
from the rows' window state (``windows.evaluate_at``, the online reader's maths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from fraud_platform.lib.features.compute import entity_key_expr
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.window_join import evaluate_at
from fraud_platform.lib.features.windows import Measure, window_plan

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
        plan = window_plan(group)
        windowed = [f.name for f in plan.features if f.name in names]
        state = plan.state_columns if windowed else []
        rows = (
            group_rows[group.versioned_name]
            .lazy()
            .select(ENTITY_KEY, FEATURE_TIME, *names, *state)
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
        values = rows.select(pl.col(names).gather(matched))
        if windowed:
            _check_state(group, rows, plan.measures)
            probes = left.select(
                time_column, entity_key_expr(group.entity.join_keys).alias(ENTITY_KEY)
            )
            at_t = evaluate_at(plan, rows, probes, time_column).select(windowed)
            values = values.with_columns(at_t.select(pl.all().gather(back_to_row_order)))
        parts.append(values)
    return pl.concat(parts, how="horizontal")


def _check_state(group: FeatureGroup, rows: pl.DataFrame, measures: Sequence[Measure]) -> None:
    """Rows written before windows were evaluated at the lookup lack the state (null)."""
    missing = [m.name for m in measures if rows[m.name].null_count()]
    if missing:
        raise ValueError(
            f"{group.versioned_name}: {rows[missing[0]].null_count()} rows without window state "
            f"{missing[0]}: rows computed before windows-at-lookup; recompute the group's table"
        )
