"""Feature rows of a time range from bounded inputs: the range's events, the longest window's
lookback before it, and each entity's lifetime state at the range's start.

A window aggregate of a row depends only on the events of its window (``compute.py`` sums in
fixed point and takes deviations over the window's own values), so the lookback suffices for
every windowed feature. A lifetime aggregate depends on all of the entity's history; its state
at ``start`` is the value of the entity's last row before ``start`` (for count, max, min and
last the value IS the state), so a range continues from that state exactly:
count = state + count since, max = max(state, max since), min likewise, last = last since or
state, until the entity's first gap of ``compute.lifetime_gap`` within the range (there the
whole history restarts too). Results equal the whole-history computation row for row
(tests/unit/features).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import polars as pl

from fraud_platform.lib.features.compute import FIXED_DTYPE, compute_feature_group, lifetime_gap
from fraud_platform.lib.features.registry import (
    ENTITY_KEY,
    FEATURE_TIME,
    Feature,
    FeatureGroup,
)
from fraud_platform.lib.features.windows import stored_group

# fixed_sum(sq): the exact integer prefix totals of windows.py, continued like a count
CHECKPOINTABLE = frozenset({"count", "max", "min", "last", "fixed_sum", "fixed_sumsq"})
STATE_SUFFIX = "__state"
_STATE_TIME = "__state_time"


def longest_window(group: FeatureGroup) -> timedelta:
    """The longest window of the group (zero when it has only lifetime features)."""
    return max((f.window for f in group.features if f.window is not None), default=timedelta(0))


def lifetime_features(group: FeatureGroup) -> list[Feature]:
    """The group's lifetime features, the hidden prefix totals of ``windows`` among them."""
    return [f for f in stored_group(group).features if f.window is None]


def is_incremental(group: FeatureGroup) -> bool:
    """True when every lifetime feature's value is its own state (count, max, min, last): a
    range can then continue from the entity's last row. A lifetime sum or mean of floats could
    not: its continuation would add in another order than the whole history did."""
    return all(f.function in CHECKPOINTABLE for f in lifetime_features(group))


def state_columns(group: FeatureGroup) -> list[str]:
    """The columns of a lifetime state: the entity, the time of its last row, the values."""
    return [
        ENTITY_KEY,
        *group.entity.join_keys,
        FEATURE_TIME,
        *[f.name for f in lifetime_features(group)],
    ]


def compute_lifetime(group: FeatureGroup, source: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """``compute_feature_group``'s rows with only the lifetime columns (``state_columns``): what
    ``lifetime_state`` needs, without computing a single window."""
    return compute_feature_group(_lifetime_only(group), source)


def _lifetime_only(group: FeatureGroup) -> FeatureGroup:
    """The stored group's lifetime features alone, restarting after the group's own gap (the
    ``ttl`` stands in for the windows left out: ``compute.lifetime_gap``)."""
    lifetime = tuple(lifetime_features(group))
    return dataclasses.replace(stored_group(group), features=lifetime, ttl=lifetime_gap(group))


def lifetime_state(
    group: FeatureGroup, rows: pl.DataFrame, previous: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Each entity's lifetime state after ``rows`` (its last row), and ``previous`` state for
    entities without rows; ``rows`` are ``compute_feature_group`` output (or a state)."""
    columns = state_columns(group)
    latest = rows.select(columns)
    if previous is not None and previous.height:
        latest = pl.concat([previous.select(columns), latest], how="vertical_relaxed")
    return (
        latest.sort(FEATURE_TIME, maintain_order=True)
        .unique(subset=[ENTITY_KEY], keep="last", maintain_order=True)
        .sort(ENTITY_KEY)
    )


def _continued(feature: Feature) -> pl.Expr:
    since, state = pl.col(feature.name), pl.col(feature.name + STATE_SUFFIX)
    if feature.function == "count":
        return (since + state.fill_null(0)).alias(feature.name)
    if feature.function in ("fixed_sum", "fixed_sumsq"):
        total = since.cast(pl.Int128) + state.cast(pl.Int128).fill_null(0)
        return total.cast(FIXED_DTYPE).alias(feature.name)
    if feature.function == "max":
        return pl.max_horizontal(since, state).alias(feature.name)
    if feature.function == "min":
        return pl.min_horizontal(since, state).alias(feature.name)
    return pl.coalesce(since, state).alias(feature.name)  # last


def compute_rows_from(
    group: FeatureGroup,
    source: pl.DataFrame | pl.LazyFrame,
    start: datetime,
    end: datetime,
    state: pl.DataFrame,
) -> pl.DataFrame:
    """The rows of ``group`` with ``start <= feature_time < end``, equal to those of
    ``compute_feature_group`` over the whole history, from ``source`` events in
    ``[start - longest window, end)`` (more are ignored) and ``state``, the lifetime state at
    ``start`` (``lifetime_state`` of every row before ``start``).

    Raises ``ValueError`` for a group that is not ``is_incremental``.
    """
    if not is_incremental(group):
        raise ValueError(f"{group.versioned_name}: a lifetime sum or mean needs the whole history")
    at = pl.col(group.event_time_column)
    source = source.lazy().filter((at >= start - longest_window(group)) & (at < end))
    lifetime = lifetime_features(group)
    windowed = tuple(f for f in group.features if f.window is not None)
    rows = compute_feature_group(
        dataclasses.replace(group, features=windowed or group.features), source, wanted_from=start
    )
    rows = rows.filter(pl.col(FEATURE_TIME) >= start)
    group = stored_group(group)
    if lifetime:
        since = compute_feature_group(_lifetime_only(group), source.filter(at >= start)).select(
            ENTITY_KEY, FEATURE_TIME, *[f.name for f in lifetime]
        )
        known = state.select(
            ENTITY_KEY,
            pl.col(FEATURE_TIME).alias(_STATE_TIME),
            *[pl.col(f.name).alias(f.name + STATE_SUFFIX) for f in lifetime],
        )
        # the state carries on until the entity's first gap of lifetime_gap (compute.py): from
        # the first row after one, the range's own aggregates are the whole history's
        previous = pl.col(FEATURE_TIME).shift(1).over(ENTITY_KEY).fill_null(pl.col(_STATE_TIME))
        restarted = ((pl.col(FEATURE_TIME) - previous) >= lifetime_gap(group)).fill_null(False)
        carried = restarted.cast(pl.Int8).cum_max().over(ENTITY_KEY) == 0
        continued = (
            since.join(known, on=ENTITY_KEY, how="left")
            .sort(ENTITY_KEY, FEATURE_TIME)
            .select(
                ENTITY_KEY,
                FEATURE_TIME,
                *[
                    pl.when(carried).then(_continued(f)).otherwise(pl.col(f.name)).alias(f.name)
                    for f in lifetime
                ],
            )
        )
        rows = rows.drop([f.name for f in lifetime], strict=False).join(
            continued, on=[ENTITY_KEY, FEATURE_TIME], how="left"
        )
    keys = list(group.entity.join_keys)
    return rows.select(ENTITY_KEY, *keys, FEATURE_TIME, *group.feature_names).sort(
        FEATURE_TIME, ENTITY_KEY
    )
