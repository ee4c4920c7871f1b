"""Daily feature partitions: any range computed alone equals the same rows of a full compute."""

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
from fraud_platform.lib.features.registry import FEATURE_TIME
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
