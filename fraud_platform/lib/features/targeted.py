"""The rows of chosen (entity, time) points only, equal bit for bit to ``compute_feature_group``.

``compute_feature_group`` evaluates every window at every event of the source (polars'
``rolling``); a stream checkpoint needs only the rows of its new events (and of later events
of an entity a late event arrived for). Here each wanted row gathers its window's events
directly: the window ``(t - w, t]`` of an entity is a contiguous run of its events sorted by
(time, tiebreak), found by an as-of join. Counts, sums and means are differences of running
integer totals at the run's ends (O(1) per row); max, min, n_unique, last and std aggregate
the run's gathered events (O(window) per row). The aggregations are those of ``compute.py``
(``_window_aggs``, ``_finish_window``, ``_lifetime_agg``, ``_cast``) over the same values in
the same order, so the floats are the same bits (tests/unit/features/test_targeted.py).

Measured (one checkpoint of 2,000 new events, 185k events of 50 merchants over 30 days, load
~15): ``compute_feature_group`` over the touched history 4.1 s, this 1.3 s; 50 users with a
30-day std 69 s -> 13 s (the std's lists are the floor).
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from fraud_platform.lib.features.compute import (
    _COUNT,
    _FIXED_SUM,
    _TIEBREAK,
    _cast,
    _finish_window,
    _fixed_point,
    _helper_columns,
    _lifetime_agg,
    _masked,
    _window_aggs,
    entity_key_expr,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature, FeatureGroup

ADDITIVE = frozenset({"count", "sum", "mean"})  # windows of these are differences of totals
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
    additive = [f for f in features if f.function in ADDITIVE]
    listed = [f for f in features if f.function not in ADDITIVE]
    rows = bounds.select(_ROW).with_columns(_additive_aggs(events, bounds, additive))
    if listed:
        members = (
            bounds.select(_ROW, pl.int_ranges(_LOW, pl.col(_HIGH) + 1).alias(_MEMBER))
            .explode(_MEMBER)
            .sort(_ROW, _MEMBER)
        )
        gathered = events.select(pl.all().gather(members[_MEMBER]))
        aggregated = (
            gathered.with_columns(members[_ROW])
            .group_by(_ROW, maintain_order=True)
            .agg(*[agg for f in listed for agg in _window_aggs(f)])
        )
        rows = rows.join(aggregated, on=_ROW, how="left")
    return rows.with_columns(*[e for f in features if (e := _finish_window(f)) is not None]).drop(
        [c for f in features for c in _helper_columns(f)]
    )


def _additive_aggs(
    events: pl.DataFrame, bounds: pl.DataFrame, features: list[Feature]
) -> list[pl.Series]:
    """The helper columns of count, sum and mean features at each bound, as differences of
    running totals: integers (counts, fixed-point sums), so exactly the window's own sums, at
    O(1) per row however many events the window holds (a busy merchant's 30 days)."""
    terms: list[pl.Expr] = []
    for feature in features:
        value = _masked(feature)
        present = value.is_not_null().cast(pl.Int64)
        if feature.function == "count":
            terms.append(present.alias(feature.name))
        else:
            terms += [
                _fixed_point(value).alias(feature.name + _FIXED_SUM),
                present.alias(feature.name + _COUNT),
            ]
    if not terms:
        return []
    per_event = events.select(terms)
    totals = per_event.select(pl.all().cum_sum())
    before = totals.select(pl.all().gather(bounds[_LOW])) - per_event.select(
        pl.all().gather(bounds[_LOW])
    )
    window = totals.select(pl.all().gather(bounds[_HIGH])) - before
    return window.get_columns()
