"""Window features at the moment of the lookup: served or joined at ``t``, a window ``w``
covers the entity's events in ``(t - w, t)`` (an event at exactly ``t`` is not seen, nothing at
or before ``t - w`` is), however long ago the entity's last event was.

A group's rows (one per entity and feature_time, ``window_state``) carry the state that makes
this exact from a few rows:

* **block totals** for count, sum, mean and std: per (column, where-filter) the count ``n``,
  the sum ``s`` of the values in fixed point (``SCALE``: the contract's smallest minor unit,
  1e-4) and, where a deviation is declared, the sum ``q`` of their squares, over the entity's
  events of the row's *block* up to and including its feature_time. Blocks are ``period`` long
  (the group's longest window), aligned to the epoch. A window spans at most two blocks, so
  ``total(t - w, t) = F(t-) - F(a) + [block(a) != block(t)] * T(a)`` with ``a = t - w``,
  ``F(t-)`` the total of the latest row before ``t`` if it is in ``t``'s block (else 0),
  ``F(a)`` that of the latest row at or before ``a`` if in ``a``'s block, ``T(a)`` that of the
  latest row before ``t``'s block if in ``a``'s block. Why blocks rather than totals since the
  entity's first event: a block total depends only on the events of the last ``period``, which
  the batch path and the stream worker (whose entity stores keep a bounded history) both hold,
  so rows from either writer can be subtracted from each other. Totals are integers (Int128),
  so differences are exact.
* **instants** for max, min and n_unique: the row's own events' max, min or sorted distinct
  values (as text); the window's value aggregates the rows in ``(t - w, t)``.

Offline (``window_join.evaluate_at``, the point-in-time join) and online (``evaluate_rows``, the reader)
apply the same formulas to the same stored integers: ints are exact, and every float is made by
the same IEEE operations in the same order (int -> float rounds to nearest in Python and in
polars; a quotient of two columns, never of a column and a scalar, which polars may turn into a
multiplication by the reciprocal), so the two agree bit for bit.

Empty windows: count and n_unique 0, sum 0.0, mean, max and min null, std null under 2 values
(sample deviation, ddof 1). The group's TTL still applies to the latest row before ``t``: no
row within the TTL means every feature of the group is null, as before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import polars as pl

from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature, FeatureGroup

SCALE = 10_000
STORED_TOTAL = pl.Decimal(38, 0)
PREFIX_FUNCTIONS = frozenset({"count", "sum", "mean", "std"})
INSTANT_FUNCTIONS = frozenset({"max", "min", "n_unique"})
# n * q of a deviation must stay below Int128's 1.7e38: checked, an error beyond it (n = 1,300
# events of the contract's largest amount, 1e12; ~1e9 events of amounts up to 1e6).
INT128_BOUND = 1.0e38
_OPS = {"==": "eq", "<": "lt", ">": "gt"}


@dataclass(frozen=True)
class Measure:
    """One block total: ``kind`` n (count), s (fixed-point sum) or q (sum of squares)."""

    kind: str
    column: str | None
    where: tuple[str, str, Any] | None

    @property
    def name(self) -> str:
        return _state_name(self.kind, self.column, self.where)


@dataclass(frozen=True)
class Instant:
    """One per-row contribution: ``function`` max, min or n_unique (the distinct values)."""

    function: str
    column: str
    where: tuple[str, str, Any] | None

    @property
    def name(self) -> str:
        return _state_name(self.function, self.column, self.where)


def _state_name(kind: str, column: str | None, where: tuple[str, str, Any] | None) -> str:
    name = f"__w_{kind}__{column or 'events'}"
    if where is not None:
        value = str(where[2]).replace(".", "p").replace("-", "m")
        name += f"__{where[0]}_{_OPS[where[1]]}_{value}"
    return name


def _measures_of(feature: Feature) -> list[Measure]:
    kinds = {"count": "n", "sum": "s", "mean": "ns", "std": "nsq"}[feature.function]
    return [Measure(kind, feature.column, feature.where) for kind in kinds]


@dataclass(frozen=True)
class WindowPlan:
    """A group's windowed features and the row state they are evaluated from."""

    group: FeatureGroup
    features: tuple[Feature, ...]
    measures: tuple[Measure, ...]
    instants: tuple[Instant, ...]
    period: timedelta

    @functools.cached_property
    def period_us(self) -> int:
        return self.period // timedelta(microseconds=1)

    @functools.cached_property
    def state_columns(self) -> list[str]:
        return [m.name for m in self.measures] + [i.name for i in self.instants]

    @functools.cached_property
    def prefix_windows(self) -> list[timedelta]:
        """The distinct windows read as block totals (one row at or before ``t - w`` each)."""
        return sorted({f.window for f in self.features if f.function in PREFIX_FUNCTIONS})  # type: ignore[type-var]

    @functools.cached_property
    def instant_horizon(self) -> timedelta:
        """How far before ``t`` rows are read for max, min and n_unique (zero: none)."""
        windows = [f.window for f in self.features if f.function in INSTANT_FUNCTIONS]
        return max(windows, default=timedelta(0))  # type: ignore[arg-type]

    @functools.cached_property
    def terms(self) -> tuple[tuple[Feature, int, tuple[str | None, ...], str | None], ...]:
        """Per windowed feature: its window in us, its totals' state names (n, s, q; None
        where not kept) or its instant's state name (the online reader's loop)."""
        measures = set(self.measures)
        terms = []
        for feature in self.features:
            assert feature.window is not None
            window_us = feature.window // timedelta(microseconds=1)
            if feature.function in PREFIX_FUNCTIONS:
                names = tuple(
                    m.name
                    if (m := Measure(kind, feature.column, feature.where)) in measures
                    else None
                    for kind in "nsq"
                )
                terms.append((feature, window_us, names, None))
            else:
                assert feature.column is not None
                instant = Instant(feature.function, feature.column, feature.where)
                terms.append((feature, window_us, (), instant.name))
        return tuple(terms)


_PLANS: dict[int, WindowPlan] = {}


def window_plan(group: FeatureGroup) -> WindowPlan:
    """The plan of ``group`` (built once per group object: groups hold a dict, so they are not
    hashable); ``ValueError`` for a windowed function without a window form."""
    hit = _PLANS.get(id(group))
    if hit is not None and hit.group is group:
        return hit
    if len(_PLANS) >= 1_000:  # groups made on the fly (tests): keep the cache bounded
        _PLANS.clear()
    plan = _PLANS[id(group)] = _window_plan(group)
    return plan


def _window_plan(group: FeatureGroup) -> WindowPlan:
    features = tuple(f for f in group.features if f.window is not None)
    measures: dict[Measure, None] = {}
    instants: dict[Instant, None] = {}
    for feature in features:
        if feature.function in PREFIX_FUNCTIONS:
            measures.update(dict.fromkeys(_measures_of(feature)))
        elif feature.function in INSTANT_FUNCTIONS and feature.column is not None:
            instants[Instant(feature.function, feature.column, feature.where)] = None
        else:
            raise ValueError(f"{feature.name}: {feature.function} has no window form")
    period = max((f.window for f in features), default=timedelta(0))  # type: ignore[type-var]
    return WindowPlan(group, features, tuple(measures), tuple(instants), period)


# --- row state ---------------------------------------------------------------------------------


def _masked(column: str | None, where: tuple[str, str, Any] | None) -> pl.Expr:
    base = pl.col(column) if column else pl.col(FEATURE_TIME)
    if where is None:
        return base
    col, value = pl.col(where[0]), where[2]
    mask = {"==": col == value, "<": col < value, ">": col > value}[where[1]]
    return pl.when(mask).then(base).otherwise(None)


def _fixed(column: str | None, where: tuple[str, str, Any] | None) -> pl.Expr:
    return (_masked(column, where).cast(pl.Float64) * SCALE).round().cast(pl.Int128)


def _instant_agg(instant: Instant) -> pl.Expr:
    value = _masked(instant.column, instant.where)
    if instant.function == "n_unique":
        return value.drop_nulls().cast(pl.String).unique().sort().alias(instant.name)
    return (value.max() if instant.function == "max" else value.min()).alias(instant.name)


def _measure_agg(measure: Measure) -> pl.Expr:
    if measure.kind == "n":
        value = _masked(measure.column, measure.where).is_not_null().cast(pl.Int128)
    elif measure.kind == "s":
        value = _fixed(measure.column, measure.where).fill_null(0)
    else:
        value = _fixed(measure.column, measure.where).pow(2).fill_null(0)
    return value.sum().alias(measure.name)


def block_of(time_us: pl.Expr, period_us: int) -> pl.Expr:
    return time_us.floordiv(period_us)


def lookback(group: FeatureGroup) -> timedelta:
    """How far before t a lookup at t may read rows: the TTL (the latest row), and for windows
    the start of the block of t - w (at most two blocks back)."""
    return max(group.ttl, 2 * window_plan(group).period)


def stored_columns(group: FeatureGroup) -> list[str]:
    """A row's values: the group's features (windowed ones as of the row's own time, kept for
    the profiles), then the state its windows are evaluated from at a lookup."""
    return [*group.feature_names, *window_plan(group).state_columns]


def window_state(plan: WindowPlan, events: pl.LazyFrame) -> pl.LazyFrame:
    """Per (entity, feature_time) of ``events`` (source events with ``ENTITY_KEY`` and
    ``FEATURE_TIME`` columns): the plan's state columns, block totals as Decimal(38, 0) (what
    Delta stores of an Int128; exact)."""
    block = "__block"
    grouped = events.group_by(ENTITY_KEY, FEATURE_TIME).agg(
        *[_measure_agg(m) for m in plan.measures], *[_instant_agg(i) for i in plan.instants]
    )
    if not plan.measures:
        return grouped.sort(ENTITY_KEY, FEATURE_TIME)
    return (
        grouped.sort(ENTITY_KEY, FEATURE_TIME)
        .with_columns(block_of(pl.col(FEATURE_TIME).dt.epoch("us"), plan.period_us).alias(block))
        .with_columns(
            pl.col(m.name).cum_sum().over(ENTITY_KEY, block).cast(STORED_TOTAL)
            for m in plan.measures
        )
        .drop(block)
    )


# --- evaluation at t ---------------------------------------------------------------------------


def finish_expr(feature: Feature, n: Any, s: Any, q: Any) -> pl.Expr:
    """A prefix feature from its window totals (Int128 expressions; ``s``, ``q`` may be None)."""
    if feature.function == "count":
        return n.cast(pl.Int64)
    if feature.function == "sum":
        # a column of SCALEs (``pl.repeat`` counts as a scalar): see the module docstring
        return s.cast(pl.Float64) / (s * 0 + SCALE).cast(pl.Float64)
    if feature.function == "mean":
        return pl.when(n > 0).then(s.cast(pl.Float64) / (n * SCALE).cast(pl.Float64))
    deviation = n * q - s * s
    bound = n.cast(pl.Float64) * q.cast(pl.Float64)
    return (
        pl.when(n < 2)
        .then(None)
        .when(bound >= INT128_BOUND)
        .then(pl.lit(float("nan")))  # reported by ``window_join``
        .otherwise(
            (deviation.cast(pl.Float64) / (n * (n - 1) * SCALE * SCALE).cast(pl.Float64)).sqrt()
        )
    )


def _finish_value(feature: Feature, n: int, s: int, q: int) -> Any:
    """``finish_expr`` on Python ints (the online reader)."""
    if feature.function == "count":
        return n
    if feature.function == "sum":
        return float(s) / float(SCALE)
    if feature.function == "mean":
        return float(s) / float(n * SCALE) if n > 0 else None
    if n < 2:
        return None
    if float(n) * float(q) >= INT128_BOUND:
        raise ValueError(f"{feature.name}: {n} values too large for an exact deviation")
    return math.sqrt(float(n * q - s * s) / float(n * (n - 1) * SCALE * SCALE))


@dataclass(frozen=True)
class EntityRows:
    """The rows of one entity and group the online reader fetched for a lookup at ``t``: each
    a mapping of state column -> value with ``FEATURE_TIME`` in epoch microseconds."""

    latest: Mapping[str, Any] | None  # the latest row before t within the TTL
    before_block: Mapping[str, Any] | None  # the latest row before t's block
    at_or_before: Mapping[timedelta, Mapping[str, Any] | None]  # per prefix window w, at t - w
    recent: Sequence[Mapping[str, Any]]  # the rows in (t - instant_horizon, t)


def window_bounds(plan: WindowPlan | None, t_us: int) -> list[int | str]:
    """The bounds the online reader asks a key's rows for at ``t_us`` (``EntityRows``): their
    count, then the start of t's block, ``t - w`` per prefix window, the instants' ``t - w``
    ('-': none). ``[0]`` for a group without windows."""
    if plan is None:
        return [0]
    horizon = plan.instant_horizon // timedelta(microseconds=1)
    prefix = [t_us - w // timedelta(microseconds=1) for w in plan.prefix_windows]
    start = t_us // plan.period_us * plan.period_us
    return [len(prefix) + 2, start, *prefix, t_us - horizon if horizon else "-"]


def evaluate_rows(plan: WindowPlan, t_us: int, rows: EntityRows) -> dict[str, Any]:
    """``evaluate_at`` for one lookup, in Python, from the rows the online reader fetched."""
    if rows.latest is None:
        return {f.name: None for f in plan.features}
    period = plan.period_us
    block_t = t_us // period
    values: dict[str, Any] = {}

    def total(row: Mapping[str, Any] | None, block: int, name: str) -> int:
        if row is None or row[FEATURE_TIME] // period != block:
            return 0
        return int(row[name])

    for feature, window_us, totals, name in plan.terms:
        if name is None:
            a = t_us - window_us
            block_a = a // period
            sums = []
            for total_name in totals:
                if total_name is None:
                    sums.append(0)
                    continue
                value = total(rows.latest, block_t, total_name) - total(
                    rows.at_or_before[feature.window],
                    block_a,
                    total_name,  # type: ignore[index]
                )
                if block_a != block_t:
                    value += total(rows.before_block, block_a, total_name)
                sums.append(value)
            values[feature.name] = _finish_value(feature, *sums)
            continue
        inside = [row[name] for row in rows.recent if t_us - window_us < row[FEATURE_TIME] < t_us]
        if feature.function == "n_unique":
            values[feature.name] = len({v for row_values in inside for v in row_values or ()})
            continue
        present = [v for v in inside if v is not None]
        pick = max if feature.function == "max" else min
        values[feature.name] = pick(present) if present else None
    return values
