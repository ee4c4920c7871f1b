"""Daily feature partitions: any range computed alone equals the same rows of a full compute."""

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from fraud_platform.defs.features.jobs import stale_partition_range
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import (
    compute_feature_group,
    compute_feature_group_between,
)
from fraud_platform.lib.features.incremental import (
    compute_rows_from,
    is_incremental,
    lifetime_state,
)
from fraud_platform.lib.features.registry import FEATURE_TIME, Feature
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.lib.simulation.profiles import simulated_profiles

START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 12


@pytest.fixture(scope="module")
def sources() -> dict[str, pl.DataFrame]:
    sim = simulate(SimulationConfig(days=DAYS, users=150, merchants=40, seed=3, start=START))
    ts = pl.Datetime("us", "UTC")
    transactions = pl.DataFrame(sim.transactions).with_columns(pl.col("event_time").cast(ts))
    labels = pl.DataFrame(sim.labels).with_columns(pl.col("label_time").cast(ts))
    frauds = labels.filter(pl.col("is_fraud")).join(
        transactions.select("transaction_id", "merchant_id"), on="transaction_id"
    )
    assert frauds.height > 0
    # two versions per user: the simulated profile, then a KYC upgrade some hours or days later
    profiles = pl.DataFrame(simulated_profiles(3, 150, START, merchants=40))
    rng = random.Random(3)
    changed = [START + timedelta(hours=rng.randrange(1, DAYS * 24)) for _ in range(profiles.height)]
    versions = pl.concat(
        [
            profiles.with_columns(pl.lit(START).alias("valid_from")),
            profiles.with_columns(
                pl.Series("valid_from", changed), (pl.col("kyc_level") + 1).clip(0, 3)
            ),
        ]
    ).with_columns(pl.col("signup_time", "valid_from").cast(ts))
    return {
        "fct_transactions": transactions,
        "fct_account_events": pl.DataFrame(sim.account_events).with_columns(
            pl.col("event_time").cast(ts)
        ),
        "fct_merchant_fraud_labels": frauds,
        "dim_account_profile_versions": versions,
    }


@pytest.mark.parametrize("group", FEATURE_GROUPS, ids=lambda g: g.versioned_name)
def test_a_partition_range_equals_the_full_computation(group, sources) -> None:
    source = sources[group.source]
    full = compute_feature_group(group, source)
    rng = random.Random(group.name)
    for _ in range(3):
        first = rng.randrange(0, DAYS)
        days = rng.randint(1, 4)
        start = START + timedelta(days=first)
        end = start + timedelta(days=days)
        part = compute_feature_group_between(group, source, start, end)
        expected = full.filter((pl.col(FEATURE_TIME) >= start) & (pl.col(FEATURE_TIME) < end))
        assert part.height == expected.height
        assert part.equals(expected), (group.versioned_name, start, end)


def test_stale_partitions_reach_back_to_the_earliest_new_event() -> None:
    assert stale_partition_range("2026-11-20", "2026-11-25") == ("2026-11-20", "2026-11-25")
    assert stale_partition_range(None, "2026-11-25") == ("2026-11-25", "2026-11-25")
    # an event stamped in the future of the partitions only refreshes today
    assert stale_partition_range("2026-11-27", "2026-11-25") == ("2026-11-25", "2026-11-25")
    # older than the first partition: clamped to the partitions that exist
    assert stale_partition_range("2019-01-01", "2026-11-25") == ("2024-01-01", "2026-11-25")


LONG_DAYS = 45  # longer than every window: lookbacks then start after the first event


@pytest.fixture(scope="module")
def long_sources(sources) -> dict[str, pl.DataFrame]:
    sim = simulate(SimulationConfig(days=LONG_DAYS, users=60, merchants=15, seed=5, start=START))
    ts = pl.Datetime("us", "UTC")
    return {
        **sources,
        "fct_transactions": pl.DataFrame(sim.transactions).with_columns(
            pl.col("event_time").cast(ts)
        ),
        "fct_account_events": pl.DataFrame(sim.account_events).with_columns(
            pl.col("event_time").cast(ts)
        ),
    }


@pytest.mark.parametrize("group", FEATURE_GROUPS, ids=lambda g: g.versioned_name)
def test_a_range_from_its_lookback_and_lifetime_state_equals_the_full_computation(
    group, long_sources
) -> None:
    """Incremental partitions: the range's events, the longest window before it and the lifetime
    state at its start give exactly (bit for bit) the whole-history rows."""
    source = long_sources[group.source]
    days = LONG_DAYS if group.source in ("fct_transactions", "fct_account_events") else DAYS
    full = compute_feature_group(group, source)
    rng = random.Random(f"incremental {group.name}")
    compared = 0
    for _ in range(3):
        start = START + timedelta(days=rng.randrange(days // 2, days), hours=rng.choice([0, 7]))
        end = start + timedelta(days=rng.randint(1, 4))
        state = lifetime_state(group, full.filter(pl.col(FEATURE_TIME) < start))
        part = compute_rows_from(group, source, start, end, state)
        expected = full.filter((pl.col(FEATURE_TIME) >= start) & (pl.col(FEATURE_TIME) < end))
        assert part.height == expected.height
        assert part.equals(expected), (group.versioned_name, start, end)
        compared += part.height
    assert compared > 0


def test_a_state_carries_entities_without_new_rows() -> None:
    velocity = FEATURE_GROUPS[0]
    group = dataclasses.replace(velocity, features=(velocity.feature("user_last_txn_time"),))
    at = START + timedelta(hours=1)
    rows = pl.DataFrame(
        {
            "entity_key": ["a", "b", "a"],
            "user_id": ["a", "b", "a"],
            FEATURE_TIME: [at, at, at + timedelta(hours=1)],
            "user_last_txn_time": [at, at, at + timedelta(hours=1)],
        }
    )
    first = lifetime_state(group, rows.head(2))
    later = lifetime_state(group, rows.tail(1), previous=first)
    assert later["entity_key"].to_list() == ["a", "b"]
    assert later["user_last_txn_time"].to_list() == [at + timedelta(hours=1), at]


def test_a_lifetime_float_sum_is_not_continued_from_a_state() -> None:
    group = dataclasses.replace(
        FEATURE_GROUPS[0], features=(Feature("lifetime_amount", "sum", "amount"),)
    )
    assert not is_incremental(group)
    with pytest.raises(ValueError, match="whole history"):
        compute_rows_from(group, pl.DataFrame(), START, START, pl.DataFrame())
