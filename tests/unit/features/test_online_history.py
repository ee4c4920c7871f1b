"""``online_history`` against a brute-force reference of what lookups read.

For random entities (bursts, gaps of hours to weeks, equal feature_times) the rows kept are
exactly the rows some lookup at ``t >= N - H`` reads (``N`` the newest row's time rounded down
to ``HISTORY_GRANULE``) (the latest row before ``t``; per window
the latest row at or before ``b_w(t)``, found by enumerating every granule boundary a window
can start at), plus the ``HISTORY_MIN_ROWS`` newest; random lookups up to 40 days after ``N``
find what they read among the kept rows; and dropping any row the rule drops changes no other
row's decision (what the store's incremental trim relies on).
"""

from __future__ import annotations

import bisect
import random
from datetime import timedelta

import polars as pl
import pytest

from fraud_platform.lib.features.catalog import (
    CARD_VELOCITY,
    USER_DEVICE_HISTORY,
    USER_TXN_VELOCITY,
)
from fraud_platform.lib.features.online.history import (
    GRANULE_US,
    HORIZON_US,
    online_history,
    retain_text,
    retained_windows,
)
from fraud_platform.lib.features.online.layout import HISTORY_MIN_ROWS, from_micros
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.windows import window_start_us

T0 = 1_750_000_000_123_456
MINUTE = 60_000_000
DAY = 86_400_000_000
GROUPS = [USER_TXN_VELOCITY, CARD_VELOCITY, USER_DEVICE_HISTORY]


def random_times(rng: random.Random) -> list[int]:
    """Event times of one entity: bursts separated by gaps from seconds to weeks, some equal."""
    times: list[int] = []
    t = T0 - rng.randrange(0, 60 * DAY)
    for _ in range(rng.randrange(1, 60)):
        gap = rng.choice([0, 1, 1_000_000, MINUTE, 24 * MINUTE, 3_600_000_000, DAY, 9 * DAY])
        t += rng.randrange(0, gap + 1) if gap else 0
        times.append(t)
        if rng.random() < 0.1:
            times.append(t)  # an equal feature_time
        if rng.random() < 0.05:
            times.append(t - rng.randrange(0, 12 * MINUTE))  # out of order
    return times


def latest_before(times: list[int], t: int, inclusive: bool) -> int | None:
    i = bisect.bisect_right(times, t) if inclusive else bisect.bisect_left(times, t)
    return times[i - 1] if i else None


def needed(group: FeatureGroup, times: list[int]) -> set[int]:
    """Brute force: the times some lookup at t >= N - H reads (N: the newest time rounded down
    to the granule), and the newest MIN_ROWS."""
    times = sorted(set(times))
    newest = times[-1]
    want = set(times[-HISTORY_MIN_ROWS:])
    start = newest - newest % GRANULE_US - HORIZON_US
    # the latest row before t, t >= N - H: t = N - H and just after each row from then on
    for t in [start, *(x + 1 for x in times if x + 1 >= start)]:
        if (row := latest_before(times, t, inclusive=False)) is not None:
            want.add(row)
    for window, granule in retained_windows(group):
        boundary = window_start_us(start, timedelta(microseconds=window))  # b_w(N - H)
        assert boundary % granule == 0
        while boundary <= newest + granule:  # every window start of a later lookup
            if (row := latest_before(times, boundary, inclusive=True)) is not None:
                want.add(row)
            boundary += granule
    return want


def frame(entities: dict[str, list[int]]) -> pl.DataFrame:
    keys = [k for k, ts in entities.items() for _ in ts]
    times = [from_micros(t) for ts in entities.values() for t in ts]
    return pl.DataFrame(
        {ENTITY_KEY: keys, FEATURE_TIME: pl.Series(times, dtype=pl.Datetime("us", "UTC"))}
    ).with_columns(tag=pl.int_range(pl.len()))


def kept_times(group: FeatureGroup, rows: pl.DataFrame) -> dict[str, set[int]]:
    kept = online_history(group, rows).with_columns(pl.col(FEATURE_TIME).dt.epoch("us"))
    out: dict[str, set[int]] = {}
    for key, t in kept.select(ENTITY_KEY, FEATURE_TIME).iter_rows():
        out.setdefault(key, set()).add(t)
    return out


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("seed", range(6))
def test_keeps_exactly_what_lookups_read(group: FeatureGroup, seed: int) -> None:
    rng = random.Random(seed)
    entities = {f"e{i}": random_times(rng) for i in range(150)}
    kept = kept_times(group, frame(entities))
    assert set(kept) == set(entities)
    for key, times in entities.items():
        assert kept[key] == needed(group, times), key


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_random_lookups_find_their_rows(group: FeatureGroup) -> None:
    rng = random.Random(11)
    entities = {f"e{i}": random_times(rng) for i in range(200)}
    kept = kept_times(group, frame(entities))
    windows = retained_windows(group)
    for key, times in entities.items():
        times = sorted(set(times))
        stored = sorted(kept[key])
        newest = times[-1]
        for _ in range(50):
            t = newest - HORIZON_US + rng.randrange(0, 40 * DAY)
            if rng.random() < 0.2:
                t = newest - HORIZON_US + rng.randrange(0, 2 * HORIZON_US)
            want = latest_before(times, t, inclusive=False)
            assert latest_before(stored, t, inclusive=False) == want
            for window, _ in windows:
                b = window_start_us(t, timedelta(microseconds=window))
                assert latest_before(stored, b, inclusive=True) == latest_before(
                    times, b, inclusive=True
                )


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_dropping_a_dropped_row_changes_no_decision(group: FeatureGroup) -> None:
    rng = random.Random(5)
    for i in range(150):
        times = sorted(set(random_times(rng)))
        kept = kept_times(group, frame({"e": times})).get("e", set())
        dropped = [t for t in times if t not in kept]
        for t in rng.sample(dropped, min(len(dropped), 5)):
            without = [x for x in times if x != t]
            assert kept_times(group, frame({"e": without}))["e"] == kept, (i, t)


def test_duplicates_and_single_rows() -> None:
    rows = frame({"a": [T0, T0, T0 - 2 * DAY], "b": [T0]})
    kept = online_history(USER_TXN_VELOCITY, rows)
    assert kept.filter(pl.col(ENTITY_KEY) == "a").height == 3  # 2 times, both kept: min rows
    assert kept.filter(pl.col(ENTITY_KEY) == "b").height == 1
    assert retain_text(USER_DEVICE_HISTORY) == "0"
    assert retain_text(CARD_VELOCITY).split()[:3] == ["3", "600000000", "10000000"]


def test_lookup_start_is_the_rules_bound() -> None:
    """(c)'s bound ``b_w(N - H)`` against the brief's ``N - H - w``: a row whose successor
    lies in the same granule as ``N - H - w`` but after it is read by no lookup."""
    window, granule = retained_windows(USER_TXN_VELOCITY)[1]  # 1 day, 24 min
    newest = T0
    start = newest - newest % GRANULE_US - HORIZON_US - window
    assert start % granule  # not a boundary of the window's granule
    g_end = -(-start // granule) * granule  # its granule's end
    succ = start + 1 if start + 1 <= g_end else start  # same granule as N - H - w, after it
    old = g_end - granule - 5 * MINUTE  # an earlier granule
    times = [old, succ, *(newest - k * 10 * MINUTE for k in range(4, -1, -1))]
    assert old not in needed(USER_TXN_VELOCITY, times)
    assert old not in kept_times(USER_TXN_VELOCITY, frame({"e": times}))["e"]
