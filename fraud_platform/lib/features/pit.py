"""Point-in-time join: the feature values each entity row could have known at its time.

For a row at time ``t`` and each group, take the group's latest row of the same entity with
``feature_time < t`` (strictly: equal timestamps are NOT visible, so an event never sees
itself) and ``t - feature_time <= ttl``; otherwise the group's features are null. Windowed
counts, sums, means and deviations are evaluated at ``t`` (``windows.py``): that row's prefix
totals minus those of the latest row at or before the window's start ``b``; windowed maxima,
minima and distinct counts from that row's profile, over its granules from ``b`` on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

import polars as pl

from fraud_platform.lib.features.compute import entity_key_expr
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.windows import (
    SPAN_START,
    LookupFeature,
    granule_us,
    lookup_granule_expr,
    lookup_plan,
    lookup_value_expr,
    profile_value_expr,
)

_ROW, _MATCH, _KEY, _TIME, _START = "__row", "__match", "__key", "__feature_time", "__start"


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
        lookups = [f for f in lookup_plan(group).features if f.name in names]
        hidden = _hidden_columns(lookups)
        rows = (
            group_rows[group.versioned_name]
            .lazy()
            .select(ENTITY_KEY, FEATURE_TIME, *[n for n in names if n not in hidden], *hidden)
            .collect(engine="in-memory")
        )
        right = rows.select(
            pl.col(ENTITY_KEY).alias(_KEY), pl.col(FEATURE_TIME).alias(_TIME)
        ).with_row_index(_MATCH)
        if not right[_TIME].is_sorted():  # offline tables are written in feature_time order
            right = right.sort(_TIME)
        entity_times = left.select(time_column, entity_key_expr(group.entity.join_keys).alias(_KEY))
        matched = (
            entity_times.join_asof(
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
        values = rows.select(pl.col([n for n in names if n not in hidden]).gather(matched))
        totaled = [f for f in lookups if f.totals is not None]
        if totaled:
            starts = {
                window: _window_start_matches(entity_times, time_column, right, window)
                for window in {f.window for f in totaled}
            }
            at_lookup = _at_lookup(rows, totaled, matched, starts, back_to_row_order)
            values = values.with_columns(at_lookup)
        profiled = [f for f in lookups if f.profile is not None]
        if profiled:
            times = left[time_column].gather(back_to_row_order)
            values = values.with_columns(_from_profiles(rows, profiled, matched, times))
        parts.append(values.select(names))
    return pl.concat(parts, how="horizontal")


def _hidden_columns(lookups: Sequence[LookupFeature]) -> list[str]:
    """The prefix totals (and the span start) and the profiles the at-lookup features read."""
    names: set[str] = set()
    for feature in lookups:
        if (totals := feature.totals) is not None:
            names |= {SPAN_START}
            names |= {n for n in (totals.count, totals.fixed_sum, totals.fixed_sumsq) if n}
        if (profile := feature.profile) is not None:
            names |= {profile.granules, profile.values}
    return sorted(names)


def _from_profiles(
    rows: pl.DataFrame, lookups: Sequence[LookupFeature], matched: pl.Series, times: pl.Series
) -> list[pl.Series]:
    """The windowed maxima, minima and distinct counts at ``times`` (entity row order) from
    the profiles of the matched rows (null without a matched row)."""
    t_us = times.dt.epoch("us")
    values = []
    for feature in lookups:
        profile = feature.profile
        assert profile is not None
        frame = pl.DataFrame(
            {
                "k": rows[profile.granules].gather(matched),
                "v": rows[profile.values].gather(matched),
                "first": lookup_granule_expr(t_us, feature.window),
                "found": matched.is_not_null(),
            }
        )
        value = profile_value_expr(feature.function, pl.col("k"), pl.col("v"), pl.col("first"))
        values.append(
            frame.select(pl.when(pl.col("found")).then(value).alias(feature.name)).to_series()
        )
    return values


def _window_start_matches(
    entity_times: pl.DataFrame, time_column: str, right: pl.DataFrame, window: timedelta
) -> pl.Series:
    """Per entity row (time order): the group row at or before the window's start ``b``."""
    g = granule_us(window)
    window_us = window // timedelta(microseconds=1)
    t_us = pl.col(time_column).dt.epoch("us")
    start = (-((window_us - t_us) // g) * g).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return entity_times.select(
        start.cast(right[_TIME].dtype).alias(_START), pl.col(_KEY)
    ).join_asof(
        right,
        left_on=_START,
        right_on=_TIME,
        by=_KEY,
        strategy="backward",
        allow_exact_matches=True,  # the window is (b, t): an event at b is before it
        check_sortedness=False,  # b grows with t
    )[_MATCH]


def _at_lookup(
    rows: pl.DataFrame,
    lookups: Sequence[LookupFeature],
    matched: pl.Series,
    starts: Mapping[timedelta, pl.Series],
    back_to_row_order: pl.Series,
) -> list[pl.Series]:
    """The at-lookup features: totals at the point-in-time row minus those at the window's
    start row (zero without one, or for one of an earlier lifetime span)."""
    totals = sorted(
        {
            n
            for f in lookups
            for n in (f.totals.count, f.totals.fixed_sum, f.totals.fixed_sumsq)
            if n
        }  # type: ignore[union-attr]
    )
    at_t = rows.select(
        pl.col(SPAN_START).gather(matched),
        *[pl.col(n).cast(pl.Int128).gather(matched) for n in totals],
    )
    by_window: dict[timedelta, pl.DataFrame] = {}
    for window, found in starts.items():
        at_start = found.gather(back_to_row_order)
        before = rows.select(
            pl.col(FEATURE_TIME).gather(at_start).alias(_TIME),
            *[pl.col(n).cast(pl.Int128).gather(at_start) for n in totals],
        )
        same_span = (before[_TIME] >= at_t[SPAN_START]).fill_null(False)
        by_window[window] = at_t.select(
            [(pl.col(n) - pl.when(same_span).then(before[n]).otherwise(0)).alias(n) for n in totals]
        )
    values = []
    for feature in lookups:
        diff = by_window[feature.window]
        totals_of = feature.totals
        assert totals_of is not None
        parts = (totals_of.count, totals_of.fixed_sum, totals_of.fixed_sumsq)
        n, s, q = (pl.col(p) if p else pl.lit(0, pl.Int128) for p in parts)
        expr = lookup_value_expr(feature.function, n, s, q)
        values.append(diff.select(expr.alias(feature.name)).to_series())
    return values
