"""Incremental `dbt build` after a sequence of ingestion runs equals a full refresh, byte for byte.

Three ingestion runs append to the bronze Delta tables (each its own ``_ingested_at``, like the
platform's ingestion commits); `dbt build` runs after each. The later runs bring late events
(event dates already built), a duplicate of an already built transaction and account event, a
label superseding an earlier one and a label that does not. Then a copy of the warehouse is
rebuilt with ``--full-refresh`` and every silver and gold table must serialise to the same bytes.
"""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import write_deltalake

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    EVENT_DATE_COLUMN,
    LABELS,
    TOPICS,
    TRANSACTIONS,
    bronze_schema,
)
from fraud_platform.lib.ingestion.profiles import BRONZE_SCHEMA as PROFILES_SCHEMA
from fraud_platform.lib.ingestion.profiles import BRONZE_TABLE as PROFILES_TABLE
from tests.dbt.test_dbt_build import (
    PROFILE_ROWS,
    account_event,
    dbt_env,
    label,
    run_dbt,
    ts,
    txn,
)

SILVER_AND_GOLD = (
    "silver.fct_transactions",
    "silver.fct_account_events",
    "silver.fct_labels",
    "silver.fct_merchant_fraud_labels",
    "silver.dim_users",
    "silver.dim_account_profile_versions",
    "gold.agg_user_daily",
    "gold.agg_merchant_daily",
)


def ingested(day: int) -> datetime:
    return datetime(2026, 3, day, 12, tzinfo=UTC)


# Run 1 (ingested 6 March noon): u1 mostly in FR on 1 and 2 March; t1 labelled not fraud.
RUN_1 = {
    TRANSACTIONS: [
        txn(0, 0, ingested(6), "t1", "u1", "c1", "m1", 10.0, "FR", ts(1, 9), "d1"),
        txn(0, 1, ingested(6), "t2", "u1", "c1", "m1", 20.5, "FR", ts(1, 10), "d1"),
        txn(0, 2, ingested(6), "t3", "u2", "c9", "m2", 7.25, "GB", ts(1, 11), "d9"),
        txn(1, 0, ingested(6), "t4", "u1", "c1", "m2", 30.0, "FR", ts(2, 9), "d1"),
    ],
    ACCOUNT_EVENTS: [
        account_event(0, 0, ingested(6), "e1", "u1", "login", "d1", ts(1, 8)),
    ],
    LABELS: [
        label(0, 0, ingested(6), "t1", ts(5, 10), False),
    ],
}
# Run 2 (7 March): three late US transactions for u1 on 1 March move u1's home country for
# 2 and 3 March; t3 and e1 are delivered again (edited copies must lose); t1's later chargeback
# supersedes its first label; t4 gets a first label.
RUN_2 = {
    TRANSACTIONS: [
        txn(0, 3, ingested(7), "t5", "u1", "c1", "m1", 5.0, "FR", ts(3, 9), "d1"),
        txn(1, 1, ingested(7), "t6", "u1", "c2", "m3", 1.0, "US", ts(1, 12), "d2"),
        txn(1, 2, ingested(7), "t7", "u1", "c2", "m3", 2.0, "US", ts(1, 13), "d2"),
        txn(1, 3, ingested(7), "t8", "u1", "c2", "m3", 3.0, "US", ts(1, 14), "d2"),
        txn(1, 4, ingested(7), "t3", "u2", "c9", "m2", 999.0, "GB", ts(1, 11), "d9"),
    ],
    ACCOUNT_EVENTS: [
        account_event(1, 0, ingested(7), "e1", "u1", "password_change", "d1", ts(1, 8)),
        account_event(1, 1, ingested(7), "e2", "u2", "login", "d9", ts(3, 8)),
    ],
    LABELS: [
        label(0, 1, ingested(7), "t1", ts(6, 10), True, "stolen_card"),
        label(0, 2, ingested(7), "t4", ts(6, 11), True, "p2p_scam"),
    ],
}
# Run 3 (8 March): new events on 4 March only, t5 delivered again, a label for t4 older than
# the one already built (it does not supersede, it only counts) and a later one clearing t1.
RUN_3 = {
    TRANSACTIONS: [
        txn(0, 4, ingested(8), "t9", "u2", "c9", "m2", 4.0, "GB", ts(4, 9), "d9"),
        txn(0, 5, ingested(8), "t5", "u1", "c1", "m1", 50.0, "FR", ts(3, 9), "d1"),
    ],
    ACCOUNT_EVENTS: [],
    LABELS: [
        label(0, 3, ingested(8), "t4", ts(5, 11), False),
        label(0, 4, ingested(8), "t1", ts(7, 10), False),
    ],
}


def append_bronze(delta_root: Path, rows_by_topic: dict[str, list[dict[str, Any]]]) -> None:
    for topic in TOPICS:
        table = pa.Table.from_pylist(rows_by_topic.get(topic, []), schema=bronze_schema(topic))
        path = str(delta_root / "bronze" / topic)
        write_deltalake(path, table, mode="append", partition_by=[EVENT_DATE_COLUMN])


def build(workdir: Path, warehouse: Path, delta_root: Path, name: str, flags: str = "") -> None:
    done = run_dbt(
        f"build {flags}".strip(),
        dbt_env(warehouse, delta_root),
        workdir / f"target_{name}",
        workdir / f"logs_{name}",
    )
    assert done.returncode == 0, done.stdout[-4000:]


def table_bytes(warehouse: Path, table: str) -> bytes:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        frame = con.sql(f"select * from {table} order by all").pl()
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()


def execute(warehouse: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(warehouse)) as con:
        return con.execute(sql).fetchall()


def test_incremental_builds_equal_a_full_refresh_byte_for_byte(tmp_path: Path) -> None:
    delta_root = tmp_path / "delta"
    warehouse = tmp_path / "warehouse.duckdb"
    write_deltalake(
        str(delta_root / PROFILES_TABLE), pa.Table.from_pylist(PROFILE_ROWS, schema=PROFILES_SCHEMA)
    )
    append_bronze(delta_root, RUN_1)
    build(tmp_path, warehouse, delta_root, "run1")
    append_bronze(delta_root, RUN_2)
    build(tmp_path, warehouse, delta_root, "run2")

    # A day run 3 does not touch keeps its rows as they are: mark one, it must survive run 3.
    untouched = "merchant_id = 'm2' and event_date = date '2026-03-02'"
    execute(warehouse, f"update gold.agg_merchant_daily set txn_count = -1 where {untouched}")
    append_bronze(delta_root, RUN_3)
    build(tmp_path, warehouse, delta_root, "run3")
    assert execute(
        warehouse, f"select txn_count from gold.agg_merchant_daily where {untouched}"
    ) == [(-1,)]
    execute(warehouse, f"update gold.agg_merchant_daily set txn_count = 1 where {untouched}")

    # hand-worked values the incremental runs must have reached
    assert execute(
        warehouse,
        "select transaction_id, amount, delivery_count from silver.fct_transactions "
        "where transaction_id in ('t3', 't5') order by 1",
    ) == [("t3", 7.25, 2), ("t5", 5.0, 2)]
    assert execute(
        warehouse,
        "select transaction_id, is_fraud, fraud_type, label_count from silver.fct_labels order by 1",
    ) == [("t1", False, None, 3), ("t4", True, "p2p_scam", 2)]
    assert execute(
        warehouse, "select transaction_id from silver.fct_merchant_fraud_labels order by 1"
    ) == [("t4",)]
    assert execute(
        warehouse,
        "select event_type, delivery_count from silver.fct_account_events where event_id = 'e1'",
    ) == [("login", 2)]
    # u1 on 1 March: FR x2, US x3 (late) -> home country US on 2 March, so t4 (FR) is foreign;
    # with t4, 3 March starts at FR 3, US 3: the tie goes to FR, used first
    assert execute(
        warehouse,
        "select event_date, home_country, foreign_txn_count from gold.agg_user_daily "
        "where user_id = 'u1' order by 1",
    ) == [
        (datetime(2026, 3, 1).date(), None, 0),
        (datetime(2026, 3, 2).date(), "US", 1),
        (datetime(2026, 3, 3).date(), "FR", 0),
    ]

    rebuilt = tmp_path / "rebuilt.duckdb"
    shutil.copy(warehouse, rebuilt)
    build(tmp_path, rebuilt, delta_root, "full", "--full-refresh")
    for table in SILVER_AND_GOLD:
        assert table_bytes(warehouse, table) == table_bytes(rebuilt, table), table
