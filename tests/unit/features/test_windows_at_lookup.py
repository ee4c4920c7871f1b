"""Windows as of the lookup (``windows.py``): the point-in-time join's windowed counts, sums,
means, deviations, maxima, minima and distinct counts at random instants equal a brute-force computation over the raw events
(the events in ``(b, t)``, ``b`` = ``t - window`` rounded up to window/60 from the epoch), for
every at-lookup feature of every group. Instants include event timestamps, instants just after
them and long after an entity's last event (its windows have emptied)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import Feature, FeatureGroup
from fraud_platform.lib.features.windows import at_lookup
from fraud_platform.lib.simulation import SimulationConfig, simulate

START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 20
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
GROUPS = [g for g in FEATURE_GROUPS if any(at_lookup(f) for f in g.features)]


@pytest.fixture(scope="module")
def sources() -> dict[str, pl.DataFrame]:
    sim = simulate(SimulationConfig(days=DAYS, users=60, merchants=15, seed=11, start=START))
    ts = pl.Datetime("us", "UTC")
    transactions = pl.DataFrame(sim.transactions).with_columns(pl.col("event_time").cast(ts))
    labels = pl.DataFrame(sim.labels).with_columns(pl.col("label_time").cast(ts))
    frauds = labels.filter(pl.col("is_fraud")).join(
        transactions.select("transaction_id", "merchant_id"), on="transaction_id"
    )
    events = pl.DataFrame(sim.account_events).with_columns(pl.col("event_time").cast(ts))
    return {
        "fct_transactions": transactions,
        "fct_account_events": events,
        "fct_merchant_fraud_labels": frauds,
    }


def _window_start(t: datetime, window: timedelta) -> datetime:
    granule = window / 60
    steps = math.ceil((t - window - EPOCH) / granule)
    return EPOCH + steps * granule


def _passes(event: dict, feature: Feature) -> bool:
    if feature.where is None:
        return True
    column, op, value = feature.where
    have = event[column]
    if have is None:
        return False
    return {"==": have == value, "<": have < value, ">": have > value}[op]


def _expected(feature: Feature, group: FeatureGroup, history: list[dict], t: datetime):
    """The feature by hand: None without an event of the entity before ``t`` within the TTL;
    else the aggregation of the values of the events in ``(b, t)``."""
    time_column = group.event_time_column
    before = [e for e in history if e[time_column] < t]
    if not before or t - max(e[time_column] for e in before) > group.ttl:
        return None
    start = _window_start(t, feature.window)
    values = [
        (e[feature.column] if feature.column else e[time_column])
        for e in before
        if e[time_column] > start and _passes(e, feature)
    ]
    values = [v for v in values if v is not None]
    if feature.function == "n_unique":
        return len(set(values))
    if feature.function in ("max", "min"):
        return (max if feature.function == "max" else min)(values) if values else None
    if feature.function == "count":
        return len(values)
    if feature.function == "sum":
        return float(sum(values))
    if feature.function == "mean":
        return sum(values) / len(values) if values else None
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.versioned_name)
def test_windows_at_random_instants_equal_the_events_by_hand(group, sources) -> None:
    source = sources[group.source]
    rows = compute_feature_group(group, source)
    keys = list(group.entity.join_keys)
    time_column = group.event_time_column
    events = source.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
    by_entity: dict[tuple, list[dict]] = {}
    for event in events.iter_rows(named=True):
        by_entity.setdefault(tuple(event[k] for k in keys), []).append(event)
    rng = random.Random(group.versioned_name)
    lookups = []
    for entity in rng.sample(sorted(by_entity), min(25, len(by_entity))):
        history = by_entity[entity]
        times = [e[time_column] for e in history]
        last = max(times)
        instants = [
            rng.choice(times),  # exactly at an event: it must not see itself
            rng.choice(times) + timedelta(microseconds=1),
            rng.choice(times) + timedelta(minutes=rng.randint(1, 90)),
            last + timedelta(hours=rng.randint(2, 30)),  # the short windows have emptied
            last + timedelta(days=rng.randint(8, 29)),  # the week's too
            START + timedelta(seconds=rng.randrange(DAYS * 86_400)),
        ]
        lookups += [(entity, t) for t in instants]
    frame = pl.DataFrame(
        {
            **{k: [entity[i] for entity, _ in lookups] for i, k in enumerate(keys)},
            "event_time": [t for _, t in lookups],
        },
        schema={**{k: source.schema[k] for k in keys}, "event_time": pl.Datetime("us", "UTC")},
    )
    joined = point_in_time_join(frame, [group], {group.versioned_name: rows})
    checked = 0
    for feature in (f for f in group.features if at_lookup(f)):
        got = joined[feature.name].to_list()
        for (entity, t), value in zip(lookups, got, strict=True):
            expected = _expected(feature, group, by_entity[entity], t)
            where = (feature.name, entity, t)
            if expected is None or feature.function in ("count", "n_unique", "max", "min"):
                assert value == expected, where
            else:  # floats: the stored totals are exact; the hand sum adds floats in order
                assert value == pytest.approx(expected, rel=1e-9, abs=1e-9), where
            checked += expected is not None and expected != 0
    assert checked > 20  # windows that held something
    if any(f.function in ("max", "min", "n_unique") for f in group.features if at_lookup(f)):
        assert checked > 40
