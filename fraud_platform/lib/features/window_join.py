"""Windowed features at each probe of the point-in-time join, evaluated as ``windows.py``
states: block totals at three as-of joins (the latest row before t, before t's block, at or
before t - w), max/min/n_unique over a rolling window closed at neither end over the rows and
the probes."""

from __future__ import annotations

from typing import Any

import polars as pl

from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature
from fraud_platform.lib.features.windows import (
    INSTANT_FUNCTIONS,
    PREFIX_FUNCTIONS,
    Instant,
    Measure,
    WindowPlan,
    block_of,
    finish_expr,
)

_T, _P = "__t", "__probe"


def _asof(
    probes: pl.DataFrame, rows: pl.DataFrame, left_on: str, *, strict: bool, tolerance: Any = None
) -> pl.DataFrame:
    return probes.select(ENTITY_KEY, left_on).join_asof(
        rows,
        left_on=left_on,
        right_on=FEATURE_TIME,
        by=ENTITY_KEY,
        strategy="backward",
        allow_exact_matches=not strict,
        check_sortedness=False,
        tolerance=tolerance,
    )


def evaluate_at(
    plan: WindowPlan, rows: pl.DataFrame, probes: pl.DataFrame, time_column: str
) -> pl.DataFrame:
    """The windowed features of ``plan`` at each probe (``ENTITY_KEY``, ``time_column``), in
    the probes' order; ``rows`` are ``window_state`` output (with ``FEATURE_TIME``). Every
    feature is null where the entity has no row before the probe within the group's TTL."""
    us = pl.Datetime("us", "UTC")
    order = probes.select(ENTITY_KEY, pl.col(time_column).cast(us).alias(_T)).with_row_index(_P)
    order = order.sort(_T)
    right = rows.select(
        ENTITY_KEY,
        pl.col(FEATURE_TIME).cast(us),
        *[pl.col(m.name).cast(pl.Int128) for m in plan.measures],
        *[i.name for i in plan.instants],
    )
    if not right[FEATURE_TIME].is_sorted():
        right = right.sort(FEATURE_TIME)
    period = plan.period_us
    t_us = pl.col(_T).dt.epoch("us")
    block_t = block_of(t_us, period) if period else pl.lit(0)
    measures = right.select(ENTITY_KEY, FEATURE_TIME, *[m.name for m in plan.measures])
    latest = _asof(order, measures, _T, strict=True, tolerance=plan.group.ttl)
    found = latest[FEATURE_TIME].is_not_null()
    columns: dict[str, pl.Series] = {}
    if plan.measures:
        start = order.select((block_t * period).cast(us).alias("__start"))
        before_block = _asof(order.with_columns(start), measures, "__start", strict=True)
        in_t_block = block_of(pl.col(FEATURE_TIME).dt.epoch("us"), period) == block_t
        f_t = latest.with_columns(order[_T]).select(
            pl.when(in_t_block).then(pl.col(m.name)).otherwise(0).alias(m.name)
            for m in plan.measures
        )
        for window in plan.prefix_windows:
            a = order.select((pl.col(_T) - window).alias("__a"))
            at_a = _asof(order.with_columns(a), measures, "__a", strict=False)
            block_a = block_of(pl.col("__a").dt.epoch("us"), period)
            in_a_block = block_of(pl.col(FEATURE_TIME).dt.epoch("us"), period) == block_a
            f_a = at_a.select(
                pl.when(in_a_block).then(pl.col(m.name)).otherwise(0).alias(m.name)
                for m in plan.measures
            )
            crosses = order.with_columns(a).select(
                block_of(pl.col("__a").dt.epoch("us"), period) != block_t
            )
            total_a = before_block.with_columns(a).select(
                pl.when(in_a_block & crosses.to_series())
                .then(pl.col(m.name))
                .otherwise(0)
                .alias(m.name)
                for m in plan.measures
            )
            window_totals = pl.DataFrame(
                {m.name: f_t[m.name] - f_a[m.name] + total_a[m.name] for m in plan.measures}
            )
            for feature in plan.features:
                if feature.window != window or feature.function not in PREFIX_FUNCTIONS:
                    continue
                n, s, q = (
                    pl.col(Measure(kind, feature.column, feature.where).name)
                    if Measure(kind, feature.column, feature.where) in plan.measures
                    else None
                    for kind in "nsq"
                )
                columns[feature.name] = window_totals.select(
                    finish_expr(feature, n, s, q).alias(feature.name)
                ).to_series()
    for feature in plan.features:
        if feature.function in INSTANT_FUNCTIONS:
            columns[feature.name] = _instant_window(plan, feature, right, order)
    frame = pl.DataFrame([columns[f.name] for f in plan.features])
    _check_bound(plan, frame)
    frame = frame.with_columns(
        pl.when(pl.Series(found)).then(pl.col(f.name)).otherwise(None).alias(f.name)
        if f.dtype != "int"
        else pl.when(pl.Series(found))
        .then(pl.col(f.name).fill_null(0).cast(pl.Int64))
        .otherwise(None)
        for f in plan.features
    )
    return frame.with_columns(order[_P]).sort(_P).drop(_P)


def _check_bound(plan: WindowPlan, frame: pl.DataFrame) -> None:
    for feature in plan.features:
        if feature.function == "std" and frame[feature.name].is_nan().any():
            raise ValueError(f"{feature.name}: values too large for an exact deviation")


def _instant_window(
    plan: WindowPlan, feature: Feature, right: pl.DataFrame, order: pl.DataFrame
) -> pl.Series:
    """max, min or n_unique over the rows in (t - w, t) of each probe (in ``order``'s order):
    a rolling window closed at neither end over the rows and the probes (null values)."""
    assert feature.column is not None and feature.window is not None
    name = Instant(feature.function, feature.column, feature.where).name
    values = right.select(ENTITY_KEY, FEATURE_TIME, pl.col(name).alias("__v"))
    if feature.function == "n_unique":
        values = values.explode("__v")
    probes = order.select(
        ENTITY_KEY, pl.col(_T).alias(FEATURE_TIME), pl.lit(None, values.schema["__v"]).alias("__v")
    )
    both = pl.concat([values, probes]).sort(ENTITY_KEY, FEATURE_TIME)
    agg = {
        "max": pl.col("__v").max(),
        "min": pl.col("__v").min(),
        "n_unique": pl.col("__v").drop_nulls().n_unique(),
    }[feature.function]
    # a window depends only on (entity, time): the result is joined back on them (rolling
    # does not promise to keep the input's order)
    rolled = (
        both.rolling(
            index_column=FEATURE_TIME, period=feature.window, group_by=ENTITY_KEY, closed="none"
        )
        .agg(agg.alias(feature.name))
        .unique(subset=[ENTITY_KEY, FEATURE_TIME])
    )
    matched = order.select(ENTITY_KEY, pl.col(_T).alias(FEATURE_TIME)).join(
        rolled, on=[ENTITY_KEY, FEATURE_TIME], how="left", maintain_order="left"
    )
    return matched[feature.name]
