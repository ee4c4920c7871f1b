"""The rows of chosen (entity, time) points only, equal bit for bit to ``compute_feature_group``.

``compute_feature_group`` evaluates every window at every event of the source (polars'
``rolling``); a stream checkpoint needs only the rows of its new events (and of later events
of an entity a late event arrived for). Here each wanted row gathers its window's events
directly: the window ``(t - w, t]`` of an entity is a contiguous run of its events sorted by
(time, tiebreak), found by an as-of join, so a row costs the size of its window rather than
a rolling pass over the entity's whole history. The aggregations are those of ``compute.py``
(``_window_aggs``, ``_finish_window``, ``_lifetime_agg``, ``_cast``) over the same values in
the same order, so the floats are the same bits (tests/unit/features/test_targeted.py).

Measured (stream worker, benchmarks/stream_freshness.py): recomputing each touched entity's
whole history at every checkpoint was the worker's largest computation cost.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from fraud_platform.lib.features.compute import (
    _TIEBREAK,
    _cast,
    _finish_window,
    _helper_columns,
    _lifetime_agg,
    _window_aggs,
    entity_key_expr,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature, FeatureGroup

SINCE = "__since"  # per entity: the earliest feature_time whose row is wanted (epoch us)
_INDEX, _FROM, _LOW, _HIGH, _MEMBER, _ROW = "__i", "__from", "__lo", "__hi", "__m", "__row"


def prepare_events(group: FeatureGroup, source: pl.DataFrame) -> pl.DataFrame:
    """``source`` events as ``compute_feature_group`` orders them: entity key, feature_time and
    tiebreak added, sorted by (entity, time, tiebreak). Groups with the same join keys, event
    time column and source columns share one prepared frame."""
    keys = list(group.entity.join_keys)
    columns = source.columns
    return (
        source.lazy()
        .filter(pl.all_horizontal([pl.col(k).is_not_null() for k in keys]))
        .with_columns(
            entity_key_expr(group.entity.join_keys),
            pl.col(group.event_time_column).alias(FEATURE_TIME),
            pl.struct(columns).hash(seed=0).alias(_TIEBREAK),
        )
        .sort(ENTITY_KEY, FEATURE_TIME, _TIEBREAK)
        .collect()
    )


def compute_rows_since(
    group: FeatureGroup, events: pl.DataFrame, since: pl.DataFrame
) -> pl.DataFrame:
    """The rows of ``group`` of the entities in ``since`` (``ENTITY_KEY``, ``SINCE``: epoch
    microseconds) with feature_time >= their ``SINCE``: exactly those rows of
    ``compute_feature_group`` over the same events. ``events`` is ``prepare_events`` output
    holding every event of those entities within the group's longest window before ``SINCE``
    (all of them if the group has lifetime features); other entities' events are ignored."""
    keys = list(group.entity.join_keys)
    events = events.join(since.select(ENTITY_KEY), on=ENTITY_KEY, how="semi").with_row_index(_INDEX)
    ft_us = pl.col(FEATURE_TIME).dt.epoch("us")
    # one row per (entity, time): the last event at that time (as compute's unique keep-last)
    points = (
        events.group_by(ENTITY_KEY, FEATURE_TIME, maintain_order=True)
        .agg(pl.col(_INDEX).last().alias(_HIGH))
        .join(since, on=ENTITY_KEY, how="inner")
        .filter(ft_us >= pl.col(SINCE))
        .drop(SINCE)
        .with_row_index(_ROW)
    )
    at_high = events.select(pl.all().gather(points[_HIGH]))
    rows = points.select(_ROW, ENTITY_KEY, FEATURE_TIME).with_columns(at_high.select(keys))
    windows: dict[timedelta, list[Feature]] = {}
    lifetime: list[Feature] = []
    for feature in group.features:
        if feature.window is None:
            lifetime.append(feature)
        else:
            windows.setdefault(feature.window, []).append(feature)
    for window, features in windows.items():
        rows = rows.join(_window_rows(events, points, window, features), on=_ROW, how="left")
    if lifetime:
        values = events.select(*[_lifetime_agg(f) for f in lifetime])
        rows = rows.with_columns(values.select(pl.all().gather(points[_HIGH])))
    return rows.select(ENTITY_KEY, *keys, FEATURE_TIME, *[_cast(f) for f in group.features]).sort(
        FEATURE_TIME, ENTITY_KEY
    )


def _window_rows(
    events: pl.DataFrame, points: pl.DataFrame, window: timedelta, features: list[Feature]
) -> pl.DataFrame:
    """``features`` (one window) at each of ``points``: its window's events gathered by index,
    in (time, tiebreak) order, aggregated as ``compute_feature_group`` aggregates them."""
    starts = events.select(ENTITY_KEY, FEATURE_TIME, _INDEX).sort(FEATURE_TIME, _INDEX)
    bounds = (
        points.select(_ROW, ENTITY_KEY, _HIGH, (pl.col(FEATURE_TIME) - window).alias(_FROM))
        .sort(_FROM)
        .join_asof(
            starts.rename({FEATURE_TIME: _FROM, _INDEX: _LOW}),
            on=_FROM,
            by=ENTITY_KEY,
            strategy="forward",
            allow_exact_matches=False,  # the window is (t - w, t]
            check_sortedness=False,  # sorted by _FROM; polars cannot check it within groups
        )
    )
    members = (
        bounds.select(_ROW, pl.int_ranges(_LOW, pl.col(_HIGH) + 1).alias(_MEMBER))
        .explode(_MEMBER)
        .sort(_ROW, _MEMBER)
    )
    gathered = events.select(pl.all().gather(members[_MEMBER]))
    return (
        gathered.with_columns(members[_ROW])
        .group_by(_ROW, maintain_order=True)
        .agg(*[agg for f in features for agg in _window_aggs(f)])
        .with_columns(*[e for f in features if (e := _finish_window(f)) is not None])
        .drop([c for f in features for c in _helper_columns(f)])
    )
