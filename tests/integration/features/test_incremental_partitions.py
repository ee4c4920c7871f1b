"""Incremental feature partitions in Dagster, against a real DuckDB warehouse and real Delta
tables: a range reads only its lookback when a lifetime checkpoint holds, falls back to the
whole history when an event dated before it arrived later, and every stored row always equals
the whole-history computation."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from fraud_platform.defs.features.assets import feature_group_definitions, feature_table
from fraud_platform.defs.features.state import STATE_RETENTION_DAYS, VALID_AT, state_table
from fraud_platform.lib.features.catalog import USER_TXN_VELOCITY
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.incremental import longest_window
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

pytestmark = pytest.mark.integration
START = datetime(2026, 9, 1, tzinfo=UTC)
DAYS = 40
GROUP = USER_TXN_VELOCITY
KEY = dg.AssetKey(["features", GROUP.versioned_name])


def _day(offset: int) -> str:
    return (START + timedelta(days=offset)).date().isoformat()


@pytest.fixture
def platform(tmp_path: Path) -> dict:
    sim = simulate(SimulationConfig(days=DAYS, users=60, merchants=15, seed=4, start=START))
    transactions = pl.DataFrame(sim.transactions).with_columns(
        pl.col("event_time").cast(pl.Datetime("us", "UTC"))
    )
    path = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(path) as connection:
        connection.sql("create schema silver")
        connection.register("frame", transactions.to_arrow())
        connection.sql("create table silver.fct_transactions as select * from frame")
    asset = feature_group_definitions(GROUP).assets[0]  # type: ignore[index]
    return {
        "path": path,
        "delta": DeltaStore(str(tmp_path / "delta")),
        "asset": asset,
        "transactions": transactions,
    }


def _materialize(platform: dict, first: str, last: str) -> dict:
    result = dg.materialize(
        [platform["asset"]],
        resources={
            "warehouse": WarehouseResource(path=platform["path"]),
            "delta": platform["delta"],
        },
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
    )
    assert result.success
    event = result.asset_materializations_for_node(platform["asset"].op.name)[0]  # one per day
    return {k: v.value for k, v in event.metadata.items()}


def _assert_store_equals_whole_history(platform: dict) -> None:
    with duckdb.connect(platform["path"], read_only=True) as connection:
        silver = connection.sql("select * from silver.fct_transactions").pl()
    silver = silver.with_columns(pl.col("event_time").dt.convert_time_zone("UTC"))
    stored = platform["delta"].read(feature_table(GROUP)).drop("feature_date")
    expected = compute_feature_group(GROUP, silver)
    assert stored.height == expected.height
    order = [FEATURE_TIME, ENTITY_KEY]
    assert stored.sort(order).equals(expected.sort(order))


def test_ranges_read_their_lookback_from_a_checkpoint_and_stay_exact(platform: dict) -> None:
    total = platform["transactions"].height
    first = _materialize(platform, _day(0), _day(DAYS - 1))
    assert first["computed_from"] == "whole history"
    states = platform["delta"].read(state_table(GROUP))
    assert states[VALID_AT].n_unique() == STATE_RETENTION_DAYS
    _assert_store_equals_whole_history(platform)

    recent = _materialize(platform, _day(DAYS - 3), _day(DAYS - 1))
    assert recent["computed_from"] == "lookback and lifetime state"
    assert 0 < recent["source_events_read"] < total * 0.9  # 30-day lookback + 3 days of 40
    _assert_store_equals_whole_history(platform)

    # an event dated 8 days back arrives after the checkpoints were written: a range starting
    # after it falls back to the whole history, one starting at its date continues exactly
    late = platform["transactions"].row(-1, named=True)
    late.update(transaction_id="late-1", event_time=START + timedelta(days=DAYS - 8, hours=12))
    with duckdb.connect(platform["path"]) as connection:
        connection.register("late", pl.DataFrame([late]).to_arrow())
        connection.sql("insert into silver.fct_transactions select * from late")
    after = _materialize(platform, _day(DAYS - 4), _day(DAYS - 1))
    assert after["computed_from"] == "whole history"
    repaired = _materialize(platform, _day(DAYS - 8), _day(DAYS - 1))
    assert repaired["computed_from"] == "lookback and lifetime state"
    _assert_store_equals_whole_history(platform)


def _insert(path: str, rows: pl.DataFrame) -> None:
    with duckdb.connect(path) as connection:
        connection.register("new_rows", rows.to_arrow())
        connection.sql("insert into silver.fct_transactions by name select * from new_rows")


def test_a_range_recomputes_only_the_entities_with_newly_ingested_events(
    tmp_path: Path,
) -> None:
    sim = simulate(SimulationConfig(days=DAYS, users=60, merchants=15, seed=4, start=START))
    stamped = pl.DataFrame(sim.transactions).with_columns(
        pl.col("event_time").cast(pl.Datetime("us", "UTC")),
        pl.lit(1, pl.Int64).alias("delivery_count"),
    )
    cut = START + timedelta(days=DAYS) - timedelta(hours=1)
    history = stamped.filter(pl.col("event_time") < cut)
    # the micro-batch: the last hour and five late copies of transactions 2 days old
    late = (
        history.filter(pl.col("event_time") >= cut - timedelta(days=2))
        .head(5)
        .with_columns(pl.col("transaction_id") + "-late")
    )
    batch = pl.concat([stamped.filter(pl.col("event_time") >= cut), late])
    path = str(tmp_path / "warehouse.duckdb")
    with duckdb.connect(path) as connection:
        connection.sql("create schema silver")
        connection.register("frame", history.to_arrow())
        connection.sql(
            "create table silver.fct_transactions as select *, "
            "timestamptz '2026-10-10 00:00:00+00' as ingested_at from frame"
        )
    platform = {
        "path": path,
        "delta": DeltaStore(str(tmp_path / "delta")),
        "asset": feature_group_definitions(GROUP).assets[0],  # type: ignore[index]
    }
    first = _materialize(platform, _day(0), _day(DAYS - 1))
    assert first["computed_from"] == "whole history"

    _insert(
        path, batch.with_columns(pl.lit(datetime(2026, 10, 11, tzinfo=UTC)).alias("ingested_at"))
    )
    with duckdb.connect(path) as connection:  # a re-delivery only counts: nothing to recompute
        connection.sql(
            "update silver.fct_transactions set delivery_count = 2 where transaction_id = "
            "(select min(transaction_id) from silver.fct_transactions)"
        )
    changed = _materialize(platform, _day(DAYS - 3), _day(DAYS - 1))
    assert changed["computed_from"] == "changed entities: lookback and lifetime state"
    lookback = stamped.filter(
        pl.col("event_time") >= START + timedelta(days=DAYS - 3) - longest_window(GROUP)
    )
    assert 0 < changed["source_events_read"] < lookback.height / 2
    _assert_store_equals_whole_history(platform)

    # an event dated before the range arrives: the range falls back to the whole history, and
    # the table keeps no mark (every entity is recomputed) until a range from the first partition
    day = START + timedelta(days=DAYS - 6)
    old = history.filter(pl.col("event_time").is_between(day, day + timedelta(hours=20))).tail(1)
    _insert(
        path,
        old.with_columns(
            pl.col("transaction_id") + "-old",
            pl.lit(datetime(2026, 10, 12, tzinfo=UTC)).alias("ingested_at"),
        ),
    )
    assert _materialize(platform, _day(DAYS - 3), _day(DAYS - 1))["computed_from"] == (
        "whole history"
    )
    repaired = _materialize(platform, _day(DAYS - 6), _day(DAYS - 1))
    assert repaired["computed_from"] == "lookback and lifetime state"
    _assert_store_equals_whole_history(platform)
    assert _materialize(platform, _day(0), _day(DAYS - 1))["computed_from"] == "whole history"
    again = _materialize(platform, _day(DAYS - 3), _day(DAYS - 1))
    assert again["computed_from"] == "changed entities: lookback and lifetime state"
    assert again["source_events_read"] == 0  # nothing ingested since the mark
    _assert_store_equals_whole_history(platform)
