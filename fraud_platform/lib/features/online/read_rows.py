"""How the lookup script's reply becomes a feature service's values: each group's stored-row
layout (its at-lookup windows' totals and profiles), the rows parsed in one JSON call, and a
row's windows evaluated at the lookup's time (``reader.OnlineFeatureReader``)."""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple

from fraud_platform.lib.features.online.layout import ONLINE_LAYOUT_VERSION, key_prefix
from fraud_platform.lib.features.registry import FeatureGroup
from fraud_platform.lib.features.shared import storage_host
from fraud_platform.lib.features.windows import (
    SPAN_START,
    granule_us,
    lookup_plan,
    lookup_value,
    profile_value,
)

# The C scanner behind json.loads, called directly: (value, end) of the JSON text at an index.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())


class _Lookup(NamedTuple):
    """An at-lookup feature: its position among the group's features, its function, which of
    the group's window starts it subtracts, and the row positions of its totals (None: 0)."""

    position: int
    function: str
    start: int
    count: int | None
    fixed_sum: int | None
    fixed_sumsq: int | None


class _ProfileLookup(NamedTuple):
    """A windowed max, min or distinct count: its position among the group's features, its
    function, window and granule (microseconds), and the row positions of its profile."""

    position: int
    function: str
    window_us: int
    granule_us: int
    granules: int
    values: int


class GroupLayout(NamedTuple):
    name: str  # versioned name
    prefix: str  # of its keys
    join_keys: tuple[str, ...]
    ttl_us: int
    features: tuple[str, ...]  # declared by the rows' group, in stored order
    nulls: tuple[None, ...]  # one per declared feature of the group read
    width: int  # a stored row's length: feature_time, stored features, writer_version
    windows: tuple[timedelta, ...]  # of the at-lookup features: a start row each
    window_granules: tuple[tuple[int, int], ...]  # per window: its length and granule (us)
    lookups: tuple[_Lookup, ...]
    profiles: tuple[_ProfileLookup, ...]
    span: int  # the row position of the span start (0 without lookups)
    declared: tuple[str, ...]  # the features of the group read
    # their positions among ``features`` when the rows are another group's (``storage_host``)
    project: tuple[int, ...] | None


def group_layout(group: FeatureGroup) -> GroupLayout:
    """How ``group``'s values come from its stored rows (those of ``storage_host(group)``:
    the host's values evaluated, then ``group``'s picked by name)."""
    host = storage_host(group)
    layout = _rows_layout(host)
    if host is group:
        return layout
    declared = tuple(group.feature_names)
    return layout._replace(
        name=group.versioned_name,
        nulls=(None,) * len(declared),
        declared=declared,
        project=tuple(layout.features.index(name) for name in declared),
    )


def _rows_layout(group: FeatureGroup) -> GroupLayout:
    plan = lookup_plan(group)
    stored = [f.name for f in plan.stored.features]
    row_position = {name: i + 1 for i, name in enumerate(stored)}  # row[0] is feature_time
    declared = tuple(group.feature_names)

    def position(name: str | None) -> int | None:
        return None if name is None else row_position[name]

    lookups = tuple(
        _Lookup(
            declared.index(f.name),
            f.function,
            plan.windows.index(f.window),
            position(f.totals.count),
            position(f.totals.fixed_sum),
            position(f.totals.fixed_sumsq),
        )
        for f in plan.features
        if f.totals is not None
    )
    profiles = tuple(
        _ProfileLookup(
            declared.index(f.name),
            f.function,
            f.window // timedelta(microseconds=1),
            granule_us(f.window),
            row_position[f.profile.granules],
            row_position[f.profile.values],
        )
        for f in plan.features
        if f.profile is not None
    )
    return GroupLayout(
        name=group.versioned_name,
        prefix=key_prefix(group),
        join_keys=tuple(group.entity.join_keys),
        ttl_us=group.ttl // timedelta(microseconds=1),
        features=declared,
        nulls=(None,) * len(declared),
        width=len(stored) + 2,
        windows=plan.windows,
        window_granules=tuple(
            (w // timedelta(microseconds=1), granule_us(w)) for w in plan.windows
        ),
        lookups=lookups,
        profiles=profiles,
        span=row_position.get(SPAN_START, 0),
        declared=declared,
        project=None,
    )


def window_starts_us(layout: GroupLayout, now_us: int) -> list[int]:
    """``windows.window_start_us`` of each of the group's windows, from precomputed integers
    (a ``timedelta`` division per window and lookup was a third of the arguments' cost)."""
    return [-((w - now_us) // g) * g for w, g in layout.window_granules]


def at_lookup_values(
    layout: GroupLayout, row: list[Any], starts: Sequence[Any], now_us: int
) -> list[Any]:
    """The group's declared values of ``row`` with its at-lookup windows evaluated at
    ``now_us``: the row's totals minus those of each window's start row (``starts``, at or
    before the window's start: the row itself where the start is not before it, zero where
    there is none or it is of an earlier span); maxima, minima and distinct counts from the
    row's profiles, over the granules from the window's start on."""
    values = row[1 : len(layout.features) + 1]
    for position, function, window_us, g, granules, profile in layout.profiles:
        first = -((window_us - now_us) // g)  # windows.lookup_granule
        values[position] = profile_value(function, row[granules], row[profile], first)
    if not layout.lookups:
        return values
    starts_us = window_starts_us(layout, now_us)
    span = row[layout.span]
    valid = [
        row if start_us >= row[0] else start if start is not None and start[0] >= span else None
        for start, start_us in zip(starts, starts_us, strict=True)
    ]
    for position, function, index, count, fixed_sum, fixed_sumsq in layout.lookups:
        start = valid[index]
        n = s = q = 0
        if count is not None:
            n = row[count] - (start[count] if start is not None else 0)
        if fixed_sum is not None:
            s = row[fixed_sum] - (start[fixed_sum] if start is not None else 0)
        if fixed_sumsq is not None:
            q = row[fixed_sumsq] - (start[fixed_sumsq] if start is not None else 0)
        values[position] = lookup_value(function, n, s, q)
    return values


def parse_rows(raw_values: Sequence[bytes | str | None], count: int) -> list[Any]:
    """The stored rows (None where absent), parsed as ONE JSON array: one C call, not ``count``."""
    try:
        joined = b",".join([b"null" if raw is None else raw for raw in raw_values]).decode()
    except TypeError:  # str values: a client with decode_responses=True
        joined = ",".join(["null" if raw is None else str(raw) for raw in raw_values])
    text = f"[{joined}]"
    try:
        rows, end = _scan_json(text, 0)
    except (ValueError, StopIteration) as exc:  # the C scanner raises both
        raise ValueError(f"not online rows of layout {ONLINE_LAYOUT_VERSION}: {exc!r}") from None
    if end != len(text) or len(rows) != count:
        raise ValueError(f"not online rows of layout {ONLINE_LAYOUT_VERSION}: {text[:120]!r}")
    return rows
