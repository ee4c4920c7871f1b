"""The sharded backfill in Dagster: the date x shard assets, materialized for 2 shards against a
real DuckDB warehouse and real Delta tables, give rows whose union equals the unsharded daily
computation exactly; the union refuses a range with a shard not computed."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_platform.defs.features.sharded import (
    FEATURE_DATE,
    MissingShards,
    sharded_definitions,
    union_of_shards,
)
from fraud_platform.defs.partitions import DATE_DIMENSION, SHARD_DIMENSION
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group_between
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

pytestmark = pytest.mark.integration
START = datetime(2026, 10, 1, tzinfo=UTC)
SHARDS = 2
GROUPS = [
    g for g in FEATURE_GROUPS if g.versioned_name in ("user_txn_velocity_v1", "card_velocity_v1")
]


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pl.DataFrame]:
    sim = simulate(SimulationConfig(days=4, users=80, merchants=20, seed=9, start=START))
    transactions = pl.DataFrame(sim.transactions).with_columns(
        pl.col("event_time").cast(pl.Datetime("us", "UTC"))
    )
    path = str(tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb")
    with duckdb.connect(path) as connection:
        connection.sql("create schema silver")
        connection.register("transactions_frame", transactions.to_arrow())
        connection.sql("create table silver.fct_transactions as select * from transactions_frame")
    return path, transactions


def test_two_shards_materialized_in_dagster_union_to_the_unsharded_rows(
    warehouse: tuple[str, pl.DataFrame], tmp_path: Path
) -> None:
    path, transactions = warehouse
    delta = DeltaStore(str(tmp_path / "delta"))
    defs = sharded_definitions(SHARDS)
    wanted = {dg.AssetKey(["features_sharded", g.versioned_name]) for g in GROUPS}
    assets = [a for a in defs.assets or [] if a.key in wanted]  # type: ignore[union-attr]
    assert len(assets) == len(GROUPS)
    days = [date(2026, 10, 2), date(2026, 10, 3)]
    for day in days:
        for shard in range(SHARDS):
            result = dg.materialize(
                assets,
                partition_key=dg.MultiPartitionKey(
                    {DATE_DIMENSION: day.isoformat(), SHARD_DIMENSION: str(shard)}
                ),
                resources={"warehouse": WarehouseResource(path=path), "delta": delta},
            )
            assert result.success
    start = datetime(2026, 10, 2, tzinfo=UTC)
    for group in GROUPS:
        union = union_of_shards(delta, group, SHARDS, days[0], days[-1])
        expected = (
            compute_feature_group_between(group, transactions, start, start + timedelta(days=2))
            .with_columns(pl.col(FEATURE_TIME).dt.date().alias(FEATURE_DATE))
            .sort(FEATURE_TIME, ENTITY_KEY)
        )
        assert expected.height > 100
        assert_frame_equal(union, expected)
        with pytest.raises(MissingShards, match="2026-10-04/0"):
            union_of_shards(delta, group, SHARDS, days[0], date(2026, 10, 4))


def test_one_shard_defines_nothing() -> None:
    defs = sharded_definitions(1)
    assert not list(defs.assets or [])
    assert not list(defs.jobs or [])


def test_the_daily_asset_writes_the_union_of_the_shards_from_shards(
    warehouse: tuple[str, pl.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_platform.defs.features import assets as feature_assets

    path, transactions = warehouse
    resources = {"warehouse": WarehouseResource(path=path), "delta": DeltaStore(str(tmp_path))}
    group = GROUPS[0]
    shard_assets = [
        a
        for a in sharded_definitions(SHARDS).assets or []  # type: ignore[union-attr]
        if a.key == dg.AssetKey(["features_sharded", group.versioned_name])
    ]
    daily = feature_assets.feature_group_definitions(group).assets[0]  # type: ignore[index]
    partition_range = {
        "dagster/asset_partition_range_start": "2026-10-02",
        "dagster/asset_partition_range_end": "2026-10-03",
    }
    config = {"ops": {f"features__{group.versioned_name}": {"config": {"from_shards": True}}}}
    monkeypatch.setattr(feature_assets, "FEATURE_SHARDS", SHARDS)
    # one shard of one day missing: the union is refused, nothing is written
    for day, shard in [("2026-10-02", "0"), ("2026-10-02", "1"), ("2026-10-03", "0")]:
        key = dg.MultiPartitionKey({DATE_DIMENSION: day, SHARD_DIMENSION: shard})
        assert dg.materialize(shard_assets, partition_key=key, resources=resources).success
    with pytest.raises(MissingShards, match="2026-10-03/1"):
        dg.materialize([daily], tags=partition_range, run_config=config, resources=resources)
    key = dg.MultiPartitionKey({DATE_DIMENSION: "2026-10-03", SHARD_DIMENSION: "1"})
    assert dg.materialize(shard_assets, partition_key=key, resources=resources).success
    assert dg.materialize(
        [daily], tags=partition_range, run_config=config, resources=resources
    ).success
    start = datetime(2026, 10, 2, tzinfo=UTC)
    expected = compute_feature_group_between(group, transactions, start, start + timedelta(days=2))
    stored = resources["delta"].read(feature_assets.feature_table(group))  # type: ignore[attr-defined]
    assert_frame_equal(
        stored.drop(FEATURE_DATE).sort(FEATURE_TIME, ENTITY_KEY),
        expected.sort(FEATURE_TIME, ENTITY_KEY),
    )
