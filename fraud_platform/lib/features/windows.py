"""Windows as of the lookup: a count, sum, mean or deviation over a window, served or joined at
time ``t``, covers the source events in ``(b, t)``, where ``b`` is ``t - window`` rounded UP to
the window's granule (``window / GRANULES_PER_WINDOW``: 1 minute for 1 hour, 24 minutes for 24
hours, 12 hours for 30 days). So the window ends at the lookup, not at the entity's last event
(a user last seen three weeks ago has counted nothing in the last hour), and it is never longer
than declared (at most one granule shorter).

How it is computed, offline and online alike, from stored rows (one per entity and event time):
each row carries hidden prefix totals of the entity's events up to and including its time
(per aggregated column and filter: how many values, their sum in fixed point and their sum of
squares, as exact integers), and the time its lifetime span started (``compute.lifetime_span``:
totals restart after a gap of the group's TTL or longest window). A window at ``t`` is the
difference of the totals of two rows: the latest row strictly before ``t`` (the point-in-time
row, within the TTL as every feature) minus the latest row at or before ``b`` (none, or one
of an earlier span: nothing to subtract). The online store keeps, besides its recent rows, the
last row of each granule a future lookup can start a window in (``online/history.py``).

The difference of exact integers is exact, and the value is then one float expression of it
(``lookup_value`` here, ``lookup_value_expr`` for polars), the same operations in the same order
on both paths: the online store's answers equal the point-in-time join's bit for bit.

A windowed max, min or distinct count at ``t`` covers the same ``(b, t)``, from the point-in-time
row alone: each row carries a hidden *profile* of its window (``profiles.py``): per granule that
a later lookup's window can still reach, the max (min) of the granule's values, or how many
distinct values were last seen in it. The lookup aggregates the entries of granules after ``b``
(``profile_value``, ``profile_value_expr``). Max and min are exact values and distinct counts
integers, so both paths agree exactly. Lifetime aggregates (``last`` values, times since) stay
as of the row's own time (the entity's last event before the lookup).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from fraud_platform.lib.features.registry import Feature, FeatureGroup, per_group

TOTALED = frozenset({"count", "sum", "mean", "std"})
PROFILED = frozenset({"max", "min", "n_unique"})
AT_LOOKUP = TOTALED | PROFILED
GRANULES_PER_WINDOW = 60
SPAN_START = "__span_start"
FIXED_POINT_SCALE = 10**8  # the fixed point of sums (compute.py): 8 decimal places
INVERSE_SCALE = 1.0 / FIXED_POINT_SCALE
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def at_lookup(feature: Feature) -> bool:
    """True for a windowed count, sum, mean, deviation, max, min or distinct count: evaluated
    at the lookup's time."""
    return feature.window is not None and feature.function in AT_LOOKUP


def granule_us(window: timedelta) -> int:
    return (window // _MICROSECOND) // GRANULES_PER_WINDOW


def window_start_us(t_us: int, window: timedelta) -> int:
    """``b``: ``t - window`` rounded up to the window's granule (epoch microseconds)."""
    g = granule_us(window)
    return -((window // _MICROSECOND - t_us) // g) * g


def lookup_granule(t_us: int, window: timedelta) -> int:
    """The first granule of the window of a lookup at ``t_us``: granule ``k`` holds the times
    ``(k * g, (k + 1) * g]``, so the window ``(b, t)`` holds granules ``b / g`` and later."""
    return window_start_us(t_us, window) // granule_us(window)


def lookup_granule_expr(t_us: pl.Expr, window: timedelta) -> pl.Expr:
    """``lookup_granule`` over a column of epoch microseconds."""
    return -((window // _MICROSECOND - t_us) // granule_us(window))


@dataclass(frozen=True)
class Totals:
    """The hidden prefix-total columns of one (column, filter): count, fixed-point sum, fixed-
    point sum of squares (None where no feature of the group needs it)."""

    count: str | None
    fixed_sum: str | None
    fixed_sumsq: str | None


@dataclass(frozen=True)
class Profile:
    """A window's hidden profile columns (``profiles.py``): ascending granule indices, and per
    granule the max or min of its values, or the number of distinct values last seen in it."""

    function: str  # max, min, n_unique
    column: str | None
    where: tuple | None
    window: timedelta
    granules: str
    values: str


@dataclass(frozen=True)
class LookupFeature:
    name: str
    function: str  # count, sum, mean, std (totals); max, min, n_unique (profile)
    window: timedelta
    totals: Totals | None
    profile: Profile | None = None


@dataclass(frozen=True)
class LookupPlan:
    """A group's windows as of the lookup: its stored group (declared + hidden features), its
    at-lookup features, the distinct windows (ascending) of those evaluated from totals (each
    needs a window start row) and the profiles the rows carry."""

    stored: FeatureGroup
    features: tuple[LookupFeature, ...]
    windows: tuple[timedelta, ...]
    profiles: tuple[Profile, ...] = ()


_NEEDS = {"count": "n", "sum": "s", "mean": "ns", "std": "nsq"}
_PLANS: dict = {}


def lookup_plan(group: FeatureGroup) -> LookupPlan:
    """The group's plan, built once per group object."""
    return per_group(_PLANS, group, "lookup", lambda: _plan(group))


def stored_group(group: FeatureGroup) -> FeatureGroup:
    """``group`` with the hidden columns its rows store: the prefix totals and the span start,
    the profiles (the group itself when it has no at-lookup feature)."""
    return lookup_plan(group).stored


def _plan(group: FeatureGroup) -> LookupPlan:
    declared = [f for f in group.features if not f.name.startswith("__")]
    keys: list[tuple[str | None, tuple | None]] = []
    needs: dict[tuple[str | None, tuple | None], set[str]] = {}
    profiles: dict[tuple, Profile] = {}
    for feature in declared:
        if not at_lookup(feature):
            continue
        if feature.function in PROFILED:
            key = (feature.function, feature.column, feature.where, feature.window)
            j = len(profiles)
            profiles.setdefault(key, Profile(*key, f"__k{j}", f"__v{j}"))  # type: ignore[arg-type]
            continue
        key = (feature.column, feature.where)
        if key not in needs:
            keys.append(key)
            needs[key] = set()
        needs[key] |= set(_NEEDS[feature.function])
    if not keys and not profiles:
        return LookupPlan(group, (), ())
    hidden: list[Feature] = []
    totals: dict[tuple[str | None, tuple | None], Totals] = {}
    for i, key in enumerate(keys):
        column, where = key
        names = {part: f"__{part}{i}" for part in needs[key]}
        for part, function, dtype in (("n", "count", "int"), ("s", "fixed_sum", "fixed")):
            if part in names:
                hidden.append(Feature(names[part], function, column, None, where, dtype))  # type: ignore[arg-type]
        if "q" in names:
            hidden.append(Feature(names["q"], "fixed_sumsq", column, None, where, "fixed"))
        totals[key] = Totals(names.get("n"), names.get("s"), names.get("q"))
    if keys:
        hidden.append(Feature(SPAN_START, "min", group.event_time_column, None, None, "ts"))
    for profile in profiles.values():
        hidden += _profile_features(profile, declared)
    stored = dataclasses.replace(group, features=(*declared, *hidden))
    features = tuple(
        LookupFeature(f.name, f.function, f.window, totals[(f.column, f.where)])  # type: ignore[arg-type]
        if f.function in TOTALED
        else LookupFeature(
            f.name,
            f.function,
            f.window,  # type: ignore[arg-type]
            None,
            profiles[(f.function, f.column, f.where, f.window)],
        )
        for f in declared
        if at_lookup(f)
    )
    windows = tuple(sorted({f.window for f in features if f.totals is not None}))
    return LookupPlan(stored, features, windows, tuple(profiles.values()))


def _profile_features(profile: Profile, declared: list[Feature]) -> list[Feature]:
    """The two hidden columns of ``profile`` (values: integer lists for distinct counts and
    integer features, else float lists)."""
    dtype = next(
        f.dtype
        for f in declared
        if (f.function, f.column, f.where, f.window)
        == (profile.function, profile.column, profile.where, profile.window)
    )
    if profile.function != "n_unique" and dtype not in ("float", "int"):
        raise ValueError(f"a windowed {profile.function} of {dtype} values is not supported")
    values_dtype = "ilist" if profile.function == "n_unique" or dtype == "int" else "flist"
    column, window, where = profile.column, profile.window, profile.where
    return [
        Feature(profile.granules, "profile_granules", column, window, where, "ilist"),
        Feature(profile.values, "profile_values", column, window, where, values_dtype),  # type: ignore[arg-type]
    ]


def lookup_value(function: str, n: int, s: int, q: int) -> int | float | None:
    """A window's value from its totals' differences (count ``n``, fixed-point sum ``s`` and
    sum of squares ``q``): the same float operations as ``lookup_value_expr``."""
    if function == "count":
        return n
    if function == "sum":
        return float(s) * INVERSE_SCALE
    if function == "mean":
        return float(s) / (float(n) * FIXED_POINT_SCALE) if n > 0 else None
    if n < 2:  # std, ddof 1
        return None
    return math.sqrt(float(n * q - s * s) / float(n * (n - 1))) * INVERSE_SCALE


def lookup_value_expr(function: str, n: pl.Expr, s: pl.Expr, q: pl.Expr) -> pl.Expr:
    """``lookup_value`` over columns of differences (Int128)."""
    if function == "count":
        return n.cast(pl.Int64)
    if function == "sum":
        return s.cast(pl.Float64) * INVERSE_SCALE
    if function == "mean":
        return pl.when(n > 0).then(s.cast(pl.Float64) / (n.cast(pl.Float64) * FIXED_POINT_SCALE))
    variance = (n * q - s * s).cast(pl.Float64) / (n * (n - 1)).cast(pl.Float64)
    return pl.when(n >= 2).then(variance.sqrt() * INVERSE_SCALE)


def profile_value(
    function: str, granules: list[int] | None, values: list | None, first_granule: int
) -> int | float | None:
    """A window's max, min or distinct count from a row's profile: over its granules from
    ``first_granule`` on (``lookup_granule``)."""
    if not granules:
        return 0 if function == "n_unique" else None
    tail = values[bisect.bisect_left(granules, first_granule) :]  # type: ignore[index]
    if function == "n_unique":
        return sum(tail)
    if not tail:
        return None
    return max(tail) if function == "max" else min(tail)


def profile_value_expr(
    function: str, granules: pl.Expr, values: pl.Expr, first_granule: pl.Expr
) -> pl.Expr:
    """``profile_value`` over list columns (null lists: no entries)."""
    before = (granules - first_granule).list.eval(pl.element() < 0).list.sum()
    tail = values.list.slice(before.fill_null(0))
    if function == "n_unique":
        return tail.list.sum().fill_null(0).cast(pl.Int64)
    return tail.list.max() if function == "max" else tail.list.min()


def uniform_totals(
    group: FeatureGroup,
    events: int,
    value: float,
    span_start: datetime,
    feature_time: datetime | None = None,
) -> dict:
    """The hidden columns of a row of ``group`` at ``feature_time`` (default ``span_start``)
    after ``events`` events of equal ``value`` (each filter passed), all in the row's own
    granule: for fixtures and benchmarks that write hand-made rows. A lookup of such a lone row
    serves counts ``events``, sums ``events * value``, means ``value``, deviations 0 (or null
    below two events), max and min ``value`` and distinct counts ``events`` while its granule
    is in the window."""
    fixed = round(value * FIXED_POINT_SCALE)
    plan = lookup_plan(group)
    hidden = [f for f in plan.stored.features if f.name.startswith("__")]
    totals = {"count": events, "fixed_sum": events * fixed, "fixed_sumsq": events * fixed * fixed}
    at_us = (feature_time or span_start) - _EPOCH
    at_us = at_us // _MICROSECOND
    profiles: dict[str, list] = {}
    for profile in plan.profiles:
        profiles[profile.granules] = [-((-at_us) // granule_us(profile.window)) - 1]
        profiles[profile.values] = [events if profile.function == "n_unique" else value]
    return {
        f.name: span_start
        if f.name == SPAN_START
        else profiles[f.name]
        if f.name in profiles
        else totals[f.function]
        for f in hidden
    }
