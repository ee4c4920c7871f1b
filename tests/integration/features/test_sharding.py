"""Sharded feature computation: each entity-hash shard computed alone, the union of the shards
equals the unsharded computation exactly (frame equality), for every declared group."""

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group_between
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME
from fraud_platform.lib.features.shards import entity_shards, shard_source
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.lib.simulation.profiles import simulated_profiles

pytestmark = pytest.mark.integration
START = datetime(2026, 10, 1, tzinfo=UTC)
DAYS = 8
SHARDS = 2


@pytest.fixture(scope="module")
def sources() -> dict[str, pl.DataFrame]:
    sim = simulate(SimulationConfig(days=DAYS, users=120, merchants=30, seed=5, start=START))
    ts = pl.Datetime("us", "UTC")
    transactions = pl.DataFrame(sim.transactions).with_columns(pl.col("event_time").cast(ts))
    labels = pl.DataFrame(sim.labels).with_columns(pl.col("label_time").cast(ts))
    frauds = labels.filter(pl.col("is_fraud")).join(
        transactions.select("transaction_id", "merchant_id"), on="transaction_id"
    )
    profiles = pl.DataFrame(simulated_profiles(5, 120, START, merchants=30))
    rng = random.Random(5)
    changed = [START + timedelta(hours=rng.randrange(1, DAYS * 24)) for _ in range(profiles.height)]
    versions = pl.concat(
        [
            profiles.with_columns(pl.lit(START).alias("valid_from")),
            profiles.with_columns(pl.Series("valid_from", changed)),
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


def test_shards_are_crc32_buckets_of_the_entity_key() -> None:
    # published CRC-32 values: "123456789" -> 0xCBF43926 (the check value), "a" -> 0xE8B7BE43
    keys = pl.Series(ENTITY_KEY, ["123456789", "a"])
    assert entity_shards(keys, 1000).to_list() == [0xCBF43926 % 1000, 0xE8B7BE43 % 1000]
    assert entity_shards(keys, 1000).to_list() == [262, 907]
    assert entity_shards(keys, 1).to_list() == [0, 0]
    with pytest.raises(ValueError, match="at least 1"):
        entity_shards(keys, 0)


@pytest.mark.parametrize("group", FEATURE_GROUPS, ids=lambda g: g.versioned_name)
def test_the_union_of_two_shards_equals_the_unsharded_rows(group, sources) -> None:
    source = sources[group.source]
    start, end = START + timedelta(days=2), START + timedelta(days=6)
    unsharded = compute_feature_group_between(group, source, start, end)
    parts = [
        compute_feature_group_between(group, shard_source(group, source, k, SHARDS), start, end)
        for k in range(SHARDS)
    ]
    assert unsharded.height > 0
    assert all(part.height > 0 for part in parts), [p.height for p in parts]
    assert not set(parts[0][ENTITY_KEY]) & set(parts[1][ENTITY_KEY])
    union = pl.concat(parts).sort(FEATURE_TIME, ENTITY_KEY)
    assert_frame_equal(union, unsharded.sort(FEATURE_TIME, ENTITY_KEY))
