"""Windows at the moment of the lookup (``windows.py``) against a brute-force reference: a plain
Python loop over each entity's events in ``(t - w, t)``, at instants exactly at event times, at
``t - w`` boundaries (an event exactly at ``t - w`` is out, one microsecond later it is in), at
block boundaries, long after an entity's last event (the windows have emptied) and beyond the
TTL (no row: null). The online form (``evaluate_rows``, from the rows a reader would fetch) must
equal the offline one (``evaluate_at``) bit for bit."""

from __future__ import annotations

import dataclasses
import math
import operator
import random
import statistics
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import polars as pl
import pytest

from fraud_platform.lib.features.catalog import DAY, FEATURE_GROUPS, HOUR, MINUTE, USER
from fraud_platform.lib.features.compute import compute_feature_group, entity_key_expr
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature, FeatureGroup
from fraud_platform.lib.features.window_join import evaluate_at
from fraud_platform.lib.features.windows import (
    EntityRows,
    WindowPlan,
    evaluate_rows,
    lookback,
    window_plan,
)

T0 = datetime(2026, 10, 1, tzinfo=UTC)
US = timedelta(microseconds=1)

EVERY_FUNCTION = FeatureGroup(
    name="every_window_function",
    version=1,
    entity=USER,
    source="fct_transactions",
    event_time_column="event_time",
    ttl=3 * DAY,
    owner="test",
    description="test",
    features=(
        Feature("n_10m", "count", None, 10 * MINUTE, dtype="int"),
        Feature("n_1h", "count", None, HOUR, dtype="int"),
        Feature("p2p_n_1d", "count", "amount", DAY, where=("channel", "==", "p2p"), dtype="int"),
        Feature("small_n_1h", "count", "amount", HOUR, where=("amount", "<", 5.0), dtype="int"),
        Feature("sum_1h", "sum", "amount", HOUR),
        Feature("p2p_sum_1d", "sum", "amount", DAY, where=("channel", "==", "p2p")),
        Feature("mean_1d", "mean", "amount", DAY),
        Feature("std_1d", "std", "amount", DAY),
        Feature("std_1h", "std", "amount", HOUR),
        Feature("max_1h", "max", "amount", HOUR),
        Feature("min_1d", "min", "amount", DAY),
        Feature("merchants_1h", "n_unique", "merchant_id", HOUR, dtype="int"),
        Feature(
            "p2p_countries_1d",
            "n_unique",
            "country",
            DAY,
            where=("channel", "==", "p2p"),
            dtype="int",
        ),
        Feature("last_time", "max", "event_time", None, dtype="ts"),
    ),
)


def _source(n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for i in range(n):
        user = f"u{rng.randrange(5)}"
        if rows and i % 6 == 0:
            at = rows[-1]["event_time"]  # ties: several events of one entity at one instant
        else:
            at = T0 + timedelta(minutes=rng.randrange(6 * 24 * 60), seconds=rng.randrange(60))
        channel = rng.choice(["ecommerce", "p2p", "withdrawal"])
        rows.append(
            {
                "event_time": at,
                "transaction_id": f"t{i}",
                "event_id": f"a{i}",
                "label_time": at,
                "user_id": user,
                "card_id": f"{user}-c{rng.randrange(2)}",
                "merchant_id": f"m{rng.randrange(6)}",
                "counterparty_id": f"p{rng.randrange(3)}" if channel == "p2p" else None,
                "device_id": f"{user}-d{rng.randrange(3)}",
                "country": rng.choice(["DE", "FR", None]),
                "channel": channel,
                "amount": rng.choice([round(rng.uniform(0.5, 900), 2), 3.1234, 1e6 + 0.0001]),
                "event_type": rng.choice(["login", "login_failed", "password_change"]),
            }
        )
    return pl.DataFrame(
        rows,
        schema_overrides={
            "event_time": pl.Datetime("us", "UTC"),
            "label_time": pl.Datetime("us", "UTC"),
        },
    )


def _probes(plan: WindowPlan, events: pl.DataFrame) -> pl.DataFrame:
    """Per entity: every event time, t - w boundaries (+-1 us), block boundaries, random
    instants, long after its last event and beyond the TTL; an entity without events too."""
    rng = random.Random(3)
    period = plan.period
    rows = []
    by_entity = events.group_by(ENTITY_KEY).agg(pl.col(FEATURE_TIME).sort()).sort(ENTITY_KEY)
    for key, times in by_entity.iter_rows():
        instants = set(times)
        for at in rng.sample(times, min(len(times), 40)):
            for window in {f.window for f in plan.features}:
                instants |= {at + window, at + window - US, at + window + US}
        last = times[-1]
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        first_block = (times[0] - epoch) // period
        for block in range(first_block, first_block + 8):
            boundary = epoch + block * period
            instants |= {boundary, boundary - US, boundary + US}
        instants |= {last + US, last + 2 * period, last + plan.group.ttl, last + 2 * plan.group.ttl}
        instants |= {times[0] + rng.random() * (last - times[0] + 3 * period) for _ in range(60)}
        rows += [(key, t) for t in sorted(instants)]
    rows.append(("nobody", T0 + DAY))
    return pl.DataFrame(
        rows, schema={ENTITY_KEY: pl.String, "t": pl.Datetime("us", "UTC")}, orient="row"
    )


def _brute_force(group: FeatureGroup, events: list[dict], t: datetime) -> dict[str, Any]:
    """Each windowed feature at t from the raw events, independently of ``windows.py``."""
    known = [e for e in events if t - group.ttl <= e[FEATURE_TIME] < t]
    out: dict[str, Any] = {}
    for feature in group.features:
        if feature.window is None:
            continue
        if not known:
            out[feature.name] = None
            continue
        inside = [e for e in events if t - feature.window < e[FEATURE_TIME] < t]
        if feature.where is not None:
            column, op, value = feature.where
            compare = {"==": operator.eq, "<": operator.lt, ">": operator.gt}[op]
            inside = [e for e in inside if e[column] is not None and compare(e[column], value)]
        column = feature.column or FEATURE_TIME
        values = [e[column] for e in inside if e[column] is not None]
        function = feature.function
        if function == "count":
            out[feature.name] = len(values)
        elif function == "sum":
            out[feature.name] = float(sum(Fraction(str(v)) for v in values))
        elif function == "mean":
            exact = sum(Fraction(str(v)) for v in values)
            out[feature.name] = float(exact / len(values)) if values else None
        elif function == "std":
            out[feature.name] = statistics.stdev(values) if len(values) >= 2 else None
        elif function in ("max", "min"):
            out[feature.name] = (max if function == "max" else min)(values) if values else None
        elif function == "n_unique":
            out[feature.name] = len(set(values))
    return out


def _online_rows(plan: WindowPlan, rows: list[dict], t_us: int) -> EntityRows:
    """What the online reader fetches for t, chosen from the entity's rows by plain loops."""
    ttl_us = plan.group.ttl // US
    before = [r for r in rows if r[FEATURE_TIME] < t_us]
    latest = before[-1] if before and t_us - before[-1][FEATURE_TIME] <= ttl_us else None
    start = t_us // plan.period_us * plan.period_us
    before_block = [r for r in rows if r[FEATURE_TIME] < start]
    at_or_before = {}
    for window in plan.prefix_windows:
        older = [r for r in rows if r[FEATURE_TIME] <= t_us - window // US]
        at_or_before[window] = older[-1] if older else None
    horizon = plan.instant_horizon // US
    recent = [r for r in before if r[FEATURE_TIME] > t_us - horizon]
    return EntityRows(latest, before_block[-1] if before_block else None, at_or_before, recent)


WINDOWED = [g for g in FEATURE_GROUPS if any(f.window is not None for f in g.features)]


@pytest.mark.parametrize("group", [EVERY_FUNCTION, *WINDOWED], ids=lambda g: g.versioned_name)
def test_windows_at_t_equal_the_events_in_the_open_window(group: FeatureGroup) -> None:
    plan = window_plan(group)
    source = _source(900, seed=len(group.name))
    state = compute_feature_group(group, source)
    events = source.filter(
        pl.all_horizontal([pl.col(k).is_not_null() for k in group.entity.join_keys])
    ).with_columns(
        entity_key_expr(group.entity.join_keys),
        pl.col(group.event_time_column).alias(FEATURE_TIME),
    )
    probes = _probes(plan, events)
    offline = evaluate_at(plan, state, probes, "t")
    assert offline.height == probes.height
    events_of: dict[str, list[dict]] = {}
    for event in events.sort(FEATURE_TIME).iter_rows(named=True):
        events_of.setdefault(event[ENTITY_KEY], []).append(event)
    rows_of: dict[str, list[dict]] = {}
    state_us = state.with_columns(pl.col(FEATURE_TIME).dt.epoch("us"))
    for row in state_us.sort(FEATURE_TIME).iter_rows(named=True):
        rows_of.setdefault(row[ENTITY_KEY], []).append(row)
    compared = empty = 0
    for (key, t), got in zip(probes.iter_rows(), offline.iter_rows(named=True), strict=True):
        expected = _brute_force(group, events_of.get(key, []), t)
        t_us = (t - datetime(1970, 1, 1, tzinfo=UTC)) // US
        online = evaluate_rows(plan, t_us, _online_rows(plan, rows_of.get(key, []), t_us))
        for name, want in expected.items():
            assert _same(online[name], got[name]), (name, key, t, online[name], got[name])
            if want is not None and group.feature(name).function == "std":
                # statistics.stdev rounds at other steps than sqrt(D / (n (n - 1))) of the
                # exact integer D: the last bits may differ
                assert got[name] == pytest.approx(want, rel=1e-12), (name, key, t)
            else:
                assert got[name] == want, (name, key, t, got[name], want)
            compared += 1
            empty += want == 0
    assert compared > 1000 and empty > 100  # emptied windows were checked, not skipped


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def test_a_row_depends_only_on_its_block_so_a_bounded_history_gives_the_same_rows() -> None:
    plan = window_plan(EVERY_FUNCTION)
    source = _source(900, seed=11)
    columns = [ENTITY_KEY, FEATURE_TIME, *plan.state_columns]
    whole = compute_feature_group(EVERY_FUNCTION, source).select(columns)
    start = T0 + timedelta(days=3, hours=5)
    bounded = compute_feature_group(
        EVERY_FUNCTION, source.filter(pl.col("event_time") >= start - plan.period)
    ).select(columns)
    assert whole.filter(pl.col(FEATURE_TIME) >= start).equals(
        bounded.filter(pl.col(FEATURE_TIME) >= start)
    )
    assert whole.filter(pl.col(FEATURE_TIME) >= start).height > 100


def test_a_windowed_function_without_a_window_form_is_refused() -> None:
    bad = dataclasses.replace(
        EVERY_FUNCTION, name="bad", features=(Feature("last_1h", "last", "amount", HOUR),)
    )
    with pytest.raises(ValueError, match="last_1h: last has no window form"):
        window_plan(bad)


def test_a_join_reads_nothing_older_than_the_lookback() -> None:
    """The skew check reads feature partitions from the earliest request minus ``lookback``:
    rows older than that never change a join (a window's rows reach two blocks back, further
    than the TTL when the longest window equals it)."""
    group = next(g for g in WINDOWED if g.versioned_name == "card_spending_v1")
    assert lookback(group) == 2 * group.ttl
    source = _source(900, seed=5).with_columns(
        pl.col("event_time") - (pl.col("event_time") - T0) * 14  # spread over ~84 days
    )
    rows = compute_feature_group(group, source)
    first = T0 - timedelta(days=20)
    probes = pl.DataFrame(
        {
            "card_id": [f"u{u}-c{c}" for u in range(5) for c in range(2)] * 6,
            "event_time": [first + timedelta(days=d) for d in range(6) for _ in range(10)],
        },
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )
    joined = point_in_time_join(probes, [group], {group.versioned_name: rows})
    recent = rows.filter(pl.col(FEATURE_TIME) >= first - lookback(group))
    assert joined.equals(point_in_time_join(probes, [group], {group.versioned_name: recent}))
    within_ttl = rows.filter(pl.col(FEATURE_TIME) >= first - group.ttl)
    assert not joined.equals(
        point_in_time_join(probes, [group], {group.versioned_name: within_ttl})
    )  # the TTL alone is not enough
