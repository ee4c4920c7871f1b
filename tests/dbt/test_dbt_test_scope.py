"""dbt tests scoped to the newly ingested rows (dbt_project/macros/test_scope.sql): with
FRAUD_PLATFORM_TESTS_INGESTED_AFTER set, as on the arrivals sensor's runs, a test checks the rows
ingested after that instant; without it, the whole model. The real dbt CLI on Delta bronze."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from fraud_platform.defs.transform.assets import (
    TESTS_INGESTED_AFTER,
    TESTS_INGESTED_AFTER_BY_TABLE,
)
from fraud_platform.lib.contracts.events import TRANSACTIONS
from tests.dbt.test_dbt_build import dbt_env, run_dbt, ts, txn, write_bronze

UNIQUE_OFFSETS = "test.fraud_platform.unique_stg_bronze__transactions_kafka_partition_kafka_offset"


def _unique_offsets_status(
    workdir: Path, after: str | None, by_table: dict[str, str] | None = None
) -> str:
    env = dbt_env(workdir / "warehouse.duckdb", workdir / "delta")
    env.pop(TESTS_INGESTED_AFTER, None)
    env.pop(TESTS_INGESTED_AFTER_BY_TABLE, None)
    if after is not None:
        env[TESTS_INGESTED_AFTER] = after
    if by_table is not None:
        env[TESTS_INGESTED_AFTER_BY_TABLE] = json.dumps(by_table)
    target = workdir / f"target-{after is not None}-{by_table is not None}"
    done = run_dbt("build --select stg_bronze__transactions", env, target, workdir / "logs")
    results = json.loads((target / "run_results.json").read_text())["results"]
    assert done.returncode == 0, done.stdout[-3000:]  # the test's severity is warn
    [status] = [r["status"] for r in results if r["unique_id"].startswith(UNIQUE_OFFSETS + ".")]
    return status


@pytest.mark.parametrize(
    ("first_ingested_on", "second_ingested_on", "scoped", "whole"),
    [(1, 1, "pass", "warn"), (2, 2, "warn", "warn"), (1, 2, "warn", "warn")],
    ids=["old-duplicate-out-of-scope", "new-duplicate-caught", "new-copy-of-old-key-caught"],
)
def test_a_scoped_test_checks_only_the_rows_ingested_after_the_instant(
    tmp_path: Path, first_ingested_on: int, second_ingested_on: int, scoped: str, whole: str
) -> None:
    first, second = first_ingested_on, second_ingested_on
    rows = [
        # two records at one Kafka partition and offset: a broken exactly-once ingestion
        txn(0, 7, ts(first, 10), "t1", "u1", "c1", "m1", 10.0, "FR", ts(first, 9), "d1"),
        txn(0, 7, ts(second, 10), "t2", "u1", "c1", "m1", 20.0, "FR", ts(second, 9), "d1"),
        txn(0, 8, ts(2, 10), "t3", "u2", "c2", "m1", 30.0, "FR", ts(2, 9), "d2"),
    ]
    write_bronze(tmp_path / "delta", {TRANSACTIONS: rows})
    after = ts(1, 23).isoformat()
    assert _unique_offsets_status(tmp_path, after) == scoped
    assert _unique_offsets_status(tmp_path, None) == whole


def test_a_staging_test_takes_its_topics_own_instant(tmp_path: Path) -> None:
    """With each stamped table's instant given, the transactions' staging test uses
    fct_transactions' one, not the earliest of all (a quiet topic's older instant): rows the
    transactions table had already absorbed are not new, whatever the labels' instant."""
    rows = [
        txn(0, 7, ts(1, 10), "t1", "u1", "c1", "m1", 10.0, "FR", ts(1, 9), "d1"),
        txn(0, 7, ts(1, 11), "t2", "u1", "c1", "m1", 20.0, "FR", ts(1, 9), "d1"),
    ]
    write_bronze(tmp_path / "delta", {TRANSACTIONS: rows})
    earliest = ts(1, 5).isoformat()  # e.g. the labels' newest row
    by_table = {
        "fct_transactions": ts(1, 23).isoformat(),
        "fct_account_events": earliest,
        "fct_labels": earliest,
    }
    assert _unique_offsets_status(tmp_path, earliest) == "warn"
    assert _unique_offsets_status(tmp_path, earliest, by_table) == "pass"


UNIQUE_IDS = "test.fraud_platform.unique_fct_transactions_transaction_id"


def test_a_scoped_unique_test_of_a_silver_table_catches_a_new_copy_of_an_old_key(
    tmp_path: Path,
) -> None:
    """The rows a new row's key is looked up among are narrowed to the new keys' range
    (macros/test_scope.sql): an old copy of a new row's key is inside it by construction."""
    rows = [
        txn(0, 1, ts(1, 10), "t1", "u1", "c1", "m1", 10.0, "FR", ts(1, 9), "d1"),
        txn(0, 2, ts(1, 10), "t2", "u1", "c1", "m1", 20.0, "FR", ts(1, 9), "d1"),
        txn(0, 3, ts(2, 10), "t3", "u2", "c2", "m1", 30.0, "FR", ts(2, 9), "d2"),
    ]
    write_bronze(tmp_path / "delta", {TRANSACTIONS: rows})
    warehouse = tmp_path / "warehouse.duckdb"
    env = dbt_env(warehouse, tmp_path / "delta")
    env.pop(TESTS_INGESTED_AFTER, None)
    select = "+fct_transactions --exclude test_name:relationships"  # no dim_users here
    built = run_dbt(f"build --select {select}", env, tmp_path / "t0", tmp_path / "logs")
    assert built.returncode == 0, built.stdout[-3000:]

    def status(name: str, copy_of: str, ingested_on: int, after: str | None) -> str:
        with duckdb.connect(str(warehouse)) as con:
            con.execute("delete from silver.fct_transactions where kafka_offset = 99")
            con.execute(
                "insert into silver.fct_transactions select * replace (99 as kafka_offset, "
                f"'{ts(ingested_on, 12).isoformat()}'::timestamptz as ingested_at) "
                f"from silver.fct_transactions where transaction_id = '{copy_of}'"
            )
        scoped = {**env, TESTS_INGESTED_AFTER: after} if after else env
        target = tmp_path / name
        run_dbt("test --select test_name:unique,fct_transactions", scoped, target, tmp_path / "l")
        results = json.loads((target / "run_results.json").read_text())["results"]
        [found] = [r["status"] for r in results if r["unique_id"].startswith(UNIQUE_IDS + ".")]
        return found

    after = ts(1, 23).isoformat()
    assert status("old-pair-out-of-scope", "t1", 1, after) == "pass"
    assert status("old-pair-whole-model", "t1", 1, None) == "fail"
    assert status("new-copy-of-old-key", "t1", 2, after) == "fail"
    assert status("new-copy-of-new-key", "t3", 2, after) == "fail"


UNIQUE_USER_DAYS = "test.fraud_platform.unique_agg_user_daily_user_id_event_date"


def test_a_scoped_unique_test_of_a_gold_table_checks_the_days_a_build_rewrites(
    tmp_path: Path,
) -> None:
    """Gold has no ``ingested_at``: its tests check the rows named by ``meta.rebuilt_rows``
    (agg_user_daily: the days from the earliest newly ingested transaction's on)."""
    rows = [
        txn(0, 1, ts(1, 10), "t1", "u1", "c1", "m1", 10.0, "FR", ts(1, 9), "d1"),
        txn(0, 2, ts(2, 10), "t2", "u1", "c1", "m1", 20.0, "FR", ts(2, 9), "d1"),
    ]
    write_bronze(tmp_path / "delta", {TRANSACTIONS: rows})
    warehouse = tmp_path / "warehouse.duckdb"
    env = dbt_env(warehouse, tmp_path / "delta")
    env.pop(TESTS_INGESTED_AFTER, None)
    select = "+agg_user_daily --exclude test_name:relationships"  # no dim_users, fct_labels
    built = run_dbt(f"build --select {select}", env, tmp_path / "t0", tmp_path / "logs")
    assert built.returncode == 0, built.stdout[-3000:]

    def status(name: str, day: int, after: str | None) -> str:
        with duckdb.connect(str(warehouse)) as con:
            con.execute("delete from gold.agg_user_daily where txn_count = 99")
            con.execute(
                "insert into gold.agg_user_daily select * replace (99 as txn_count) "
                f"from gold.agg_user_daily where event_date = '{ts(day, 0).date()}'"
            )
        scoped = {**env, TESTS_INGESTED_AFTER: after} if after else env
        target = tmp_path / name
        run_dbt("test --select test_name:unique,agg_user_daily", scoped, target, tmp_path / "l")
        results = json.loads((target / "run_results.json").read_text())["results"]
        [found] = [r["status"] for r in results if r["unique_id"].startswith(UNIQUE_USER_DAYS)]
        return found

    after = ts(1, 23).isoformat()  # t2 (day 2) is the new row
    assert status("old-day-out-of-scope", 1, after) == "pass"
    assert status("old-day-whole-model", 1, None) == "fail"
    assert status("rewritten-day", 2, after) == "fail"
