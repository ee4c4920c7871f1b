"""`dbt build` of dbt_project/ on tiny hand-written bronze Delta tables, checked in DuckDB.

Each scenario writes the four bronze tables with the real bronze schemas, runs the dbt CLI in a
subprocess (its own environment: warehouse and Delta root in tmp_path, target and logs in
tmp_path so the project's own target/ is left alone) and reads the resulting warehouse. Expected
values are worked out by hand from the rows below, not by the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    EVENT_DATE_COLUMN,
    EVENT_TIME_FIELD,
    LABELS,
    SCHEMA_VERSION,
    TOPICS,
    TRANSACTIONS,
    bronze_schema,
)
from fraud_platform.lib.ingestion.profiles import BRONZE_SCHEMA as PROFILES_SCHEMA
from fraud_platform.lib.ingestion.profiles import BRONZE_TABLE as PROFILES_TABLE

REPO_ROOT = Path(__file__).resolve().parents[2]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DBT_EXECUTABLE = Path(sys.executable).with_name("dbt")
DBT_TIMEOUT_SECONDS = 300


def ts(day: int, hour: int, minute: int = 0) -> datetime:
    """A UTC timestamp in March 2026."""
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


def bronze_row(
    topic: str, partition: int, offset: int, ingested_at: datetime, **fields: Any
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        **fields,
        "_topic": topic,
        "_partition": partition,
        "_offset": offset,
        "_ingested_at": ingested_at,
        EVENT_DATE_COLUMN: fields[EVENT_TIME_FIELD[topic]].astimezone(UTC).date(),
    }


def txn(
    partition: int,
    offset: int,
    ingested_at: datetime,
    transaction_id: str,
    user_id: str,
    card_id: str,
    merchant_id: str,
    amount: float,
    country: str,
    event_time: datetime,
    device_id: str,
    channel: str = "ecommerce",
    counterparty_id: str | None = None,
) -> dict[str, Any]:
    return bronze_row(
        TRANSACTIONS,
        partition,
        offset,
        ingested_at,
        transaction_id=transaction_id,
        event_time=event_time,
        user_id=user_id,
        card_id=card_id,
        merchant_id=merchant_id,
        merchant_category="5411",
        amount=amount,
        currency="EUR",
        channel=channel,
        counterparty_id=counterparty_id,
        device_id=device_id,
        ip="192.0.2.1",
        country=country,
    )


def account_event(
    partition: int,
    offset: int,
    ingested_at: datetime,
    event_id: str,
    user_id: str,
    event_type: str,
    device_id: str,
    event_time: datetime,
) -> dict[str, Any]:
    return bronze_row(
        ACCOUNT_EVENTS,
        partition,
        offset,
        ingested_at,
        event_id=event_id,
        event_time=event_time,
        user_id=user_id,
        event_type=event_type,
        device_id=device_id,
        ip="192.0.2.1",
        country="FR",
    )


def label(
    partition: int,
    offset: int,
    ingested_at: datetime,
    transaction_id: str,
    label_time: datetime,
    is_fraud: bool,
    fraud_type: str | None = None,
) -> dict[str, Any]:
    return bronze_row(
        LABELS,
        partition,
        offset,
        ingested_at,
        transaction_id=transaction_id,
        label_time=label_time,
        is_fraud=is_fraud,
        fraud_type=fraud_type,
    )


# t3 is sent twice: the first copy (p0/o2, ingested on 2 March) must win over the edited
# re-send (p1/o0, ingested on 3 March). t4 is at 23:30 UTC on 1 March, t5 at 00:30 on 2 March.
TRANSACTION_ROWS = [
    txn(0, 0, ts(1, 10, 1), "t1", "u1", "c1", "m1", 10.0, "FR", ts(1, 10), "d1"),
    txn(0, 1, ts(1, 12, 1), "t2", "u1", "c1", "m2", 20.0, "FR", ts(1, 12), "d1", "card_present"),
    txn(0, 2, ts(2, 9, 1), "t3", "u1", "c2", "m1", 50.0, "US", ts(2, 9), "d2"),
    txn(1, 0, ts(3, 1), "t3", "u1", "c2", "m1", 999.0, "US", ts(2, 9), "d2"),
    txn(1, 1, ts(1, 23, 31), "t4", "u2", "c3", "m1", 5.0, "GB", ts(1, 23, 30), "d3", "p2p", "u1"),
    txn(1, 2, ts(2, 0, 31), "t5", "u2", "c3", "m1", 7.5, "GB", ts(2, 0, 30), "d3", "withdrawal"),
]

# e2 is sent twice; u3 has account events only.
ACCOUNT_EVENT_ROWS = [
    account_event(0, 0, ts(1, 9, 1), "e1", "u1", "login", "d1", ts(1, 9)),
    account_event(0, 1, ts(2, 8, 56), "e2", "u1", "device_added", "d2", ts(2, 8, 55)),
    account_event(0, 2, ts(2, 9, 30), "e2", "u1", "device_added", "d2", ts(2, 8, 55)),
    account_event(1, 0, ts(2, 14, 1), "e3", "u3", "login_failed", "d9", ts(2, 14)),
]

# t3 is first cleared, then confirmed fraud by a later chargeback; t99 is a label whose
# transaction never reached bronze (a warning, not an error).
LABEL_ROWS = [
    label(0, 0, ts(3, 10, 1), "t3", ts(3, 10), False),
    label(0, 1, ts(5, 10, 1), "t3", ts(5, 10), True, "stolen_card"),
    label(1, 0, ts(4, 8, 1), "t4", ts(4, 8), True, "p2p_scam"),
    label(1, 1, ts(4, 9, 1), "t99", ts(4, 9), False),
]


def profile(
    batch: int, user_id: str, kyc_level: int, account_type: str, updated_at: datetime
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "signup_time": datetime(2025, 1, 1, tzinfo=UTC),
        "kyc_level": kyc_level,
        "home_country": "FR",
        "account_type": account_type,
        "updated_at": updated_at,
        "_batch": batch,
        "_ingested_at": updated_at,
    }


# u1's KYC level goes from 1 to 3 on 2 March; u2 has one version.
PROFILE_ROWS = [
    profile(1, "u2", 2, "premium", ts(1, 0)),
    profile(1, "u1", 1, "personal", ts(1, 8)),
    profile(2, "u1", 3, "personal", ts(2, 10)),
]
PROFILES = "account_profiles"


@dataclass(frozen=True)
class DbtRun:
    returncode: int
    output: str
    warehouse: Path
    run_results: dict[str, Any]

    def statuses(self) -> dict[str, str]:
        """unique_id -> status (success, pass, warn, fail, error, skipped)."""
        return {r["unique_id"]: r["status"] for r in self.run_results["results"]}


def write_bronze(delta_root: Path, rows_by_topic: dict[str, list[dict[str, Any]]]) -> None:
    for topic in TOPICS:
        schema = bronze_schema(topic)
        table = pa.Table.from_pylist(rows_by_topic.get(topic, []), schema=schema)
        write_deltalake(str(delta_root / "bronze" / topic), table, partition_by=[EVENT_DATE_COLUMN])
    profiles = pa.Table.from_pylist(rows_by_topic.get(PROFILES, []), schema=PROFILES_SCHEMA)
    write_deltalake(str(delta_root / PROFILES_TABLE), profiles)


def run_dbt(
    command: str, env: dict[str, str], target_path: Path, log_path: Path
) -> subprocess.CompletedProcess[str]:
    """The dbt CLI on dbt_project/ (``command`` like "build" or "docs generate")."""
    return subprocess.run(
        [str(DBT_EXECUTABLE), *command.split()]
        + ["--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
        + ["--target-path", str(target_path), "--log-path", str(log_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DBT_TIMEOUT_SECONDS,
    )


def dbt_env(warehouse: Path, delta_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FRAUD_PLATFORM_WAREHOUSE": str(warehouse),
        "FRAUD_PLATFORM_DELTA_ROOT_LOCAL": str(delta_root),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def dbt_build(workdir: Path, rows_by_topic: dict[str, list[dict[str, Any]]]) -> DbtRun:
    delta_root = workdir / "delta"
    warehouse = workdir / "warehouse.duckdb"
    write_bronze(delta_root, rows_by_topic)
    target_path = workdir / "target"
    completed = run_dbt("build", dbt_env(warehouse, delta_root), target_path, workdir / "logs")
    run_results_file = target_path / "run_results.json"
    run_results = json.loads(run_results_file.read_text()) if run_results_file.exists() else {}
    return DbtRun(completed.returncode, completed.stdout + completed.stderr, warehouse, run_results)


def query(warehouse: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> DbtRun:
    run = dbt_build(
        tmp_path_factory.mktemp("dbt_build"),
        {
            TRANSACTIONS: TRANSACTION_ROWS,
            ACCOUNT_EVENTS: ACCOUNT_EVENT_ROWS,
            LABELS: LABEL_ROWS,
            PROFILES: PROFILE_ROWS,
        },
    )
    assert run.returncode == 0, run.output[-5000:]
    return run


def test_dbt_build_passes_models_tests_and_unit_tests(built: DbtRun) -> None:
    statuses = built.statuses()
    assert statuses, "no run_results"
    failed = {uid: s for uid, s in statuses.items() if s not in ("success", "pass", "warn")}
    assert not failed, failed
    unit_tests = [uid for uid in statuses if uid.startswith("unit_test.")]
    assert len(unit_tests) >= 4
    # The orphan label t99 trips only the warn-level relationship test.
    warned = sorted(uid for uid, s in statuses.items() if s == "warn")
    assert len(warned) == 1 and "relationships_fct_labels_transaction_id" in warned[0], warned


# (query, the rows it must return) for each table of the build above.
BUILT_TABLE_ROWS = [
    pytest.param(
        "select transaction_id, amount, kafka_partition, kafka_offset, delivery_count, event_date"
        " from silver.fct_transactions order by transaction_id",
        [
            ("t1", 10.0, 0, 0, 1, D1),
            ("t2", 20.0, 0, 1, 1, D1),
            ("t3", 50.0, 0, 2, 2, D2),
            ("t4", 5.0, 1, 1, 1, D1),
            ("t5", 7.5, 1, 2, 1, D2),
        ],
        id="fct_transactions_keeps_first_ingested_copy",
    ),
    pytest.param(
        "select event_id, user_id, event_type, kafka_offset, delivery_count, event_date"
        " from silver.fct_account_events order by event_id",
        [
            ("e1", "u1", "login", 0, 1, D1),
            ("e2", "u1", "device_added", 1, 2, D2),
            ("e3", "u3", "login_failed", 0, 1, D2),
        ],
        id="fct_account_events_deduplicated",
    ),
    pytest.param(
        "select transaction_id, is_fraud, fraud_type, label_time, label_count"
        " from silver.fct_labels order by transaction_id",
        [
            ("t3", True, "stolen_card", ts(5, 10), 2),
            ("t4", True, "p2p_scam", ts(4, 8), 1),
            ("t99", False, None, ts(4, 9), 1),
        ],
        id="fct_labels_keeps_latest_label",
    ),
    pytest.param(
        "select user_id, first_seen_at, last_seen_at, home_country, n_cards, n_devices,"
        " n_transactions, n_account_events from silver.dim_users order by user_id",
        [
            ("u1", ts(1, 9), ts(2, 9), "FR", 2, 2, 3, 2),
            ("u2", ts(1, 23, 30), ts(2, 0, 30), "GB", 1, 1, 2, 0),
            ("u3", ts(2, 14), ts(2, 14), None, 0, 1, 0, 1),
        ],
        id="dim_users",
    ),
    pytest.param(
        "select user_id, event_date, txn_count, amount_sum, amount_max, distinct_merchants,"
        " distinct_countries, foreign_txn_count, window_end_at"
        " from gold.agg_user_daily order by user_id, event_date",
        # u1 on 2 March: home country FR (from 1 March), transaction t3 from US is foreign.
        [
            ("u1", D1, 2, pytest.approx(30.0), 20.0, 2, 1, 0, ts(2, 0)),
            ("u1", D2, 1, pytest.approx(50.0), 50.0, 1, 1, 1, ts(3, 0)),
            ("u2", D1, 1, pytest.approx(5.0), 5.0, 1, 1, 0, ts(2, 0)),
            ("u2", D2, 1, pytest.approx(7.5), 7.5, 1, 1, 0, ts(3, 0)),
        ],
        id="agg_user_daily",
    ),
    pytest.param(
        "select merchant_id, event_date, txn_count, amount_sum, distinct_cards, labelled_count,"
        " labelled_fraud_count from gold.agg_merchant_daily order by merchant_id, event_date",
        [
            ("m1", D1, 2, pytest.approx(15.0), 2, 1, 1),
            ("m1", D2, 2, pytest.approx(57.5), 2, 1, 1),
            ("m2", D1, 1, pytest.approx(20.0), 1, 0, 0),
        ],
        id="agg_merchant_daily",
    ),
]


@pytest.mark.parametrize(("sql", "expected"), BUILT_TABLE_ROWS)
def test_dbt_build_table_rows(built: DbtRun, sql: str, expected: list[tuple[Any, ...]]) -> None:
    assert query(built.warehouse, sql) == expected


def test_dbt_build_works_on_empty_bronze_tables(tmp_path: Path) -> None:
    run = dbt_build(tmp_path, {})
    assert run.returncode == 0, run.output[-5000:]
    for table in (
        "silver.fct_transactions",
        "silver.fct_account_events",
        "silver.fct_labels",
        "silver.dim_users",
        "silver.dim_account_profile_versions",
        "gold.agg_user_daily",
        "gold.agg_merchant_daily",
    ):
        assert query(run.warehouse, f"select count(*) from {table}") == [(0,)], table


def test_dbt_build_fails_on_missing_transaction_id(tmp_path: Path) -> None:
    broken = txn(0, 0, ts(1, 10, 1), "", "u1", "c1", "m1", 10.0, "FR", ts(1, 10), "d1")
    run = dbt_build(tmp_path, {TRANSACTIONS: [broken]})
    assert run.returncode != 0
    failed = sorted(uid for uid, s in run.statuses().items() if s == "fail")
    assert failed and all("transaction_id" in uid for uid in failed), failed
    assert any(uid.startswith("test.fraud_platform.not_null_") for uid in failed), failed


def test_dbt_docs_generate_catalogs_every_model(built: DbtRun, tmp_path: Path) -> None:
    target = tmp_path / "docs"
    env = dbt_env(built.warehouse, built.warehouse.parent / "delta")
    done = run_dbt("docs generate", env, target, tmp_path / "logs")
    assert done.returncode == 0, done.stdout[-3000:]
    assert (target / "index.html").exists()
    catalog = json.loads((target / "catalog.json").read_text())
    tables = {node["metadata"]["name"] for node in catalog["nodes"].values()}
    assert {
        "fct_transactions",
        "fct_merchant_fraud_labels",
        "agg_user_daily",
        "dim_users",
    } <= tables


def test_dbt_build_dim_account_profile_versions(built: DbtRun) -> None:
    rows = query(
        built.warehouse,
        "select profile_version_id, user_id, kyc_level, account_type, valid_from, valid_to"
        " from silver.dim_account_profile_versions order by user_id, valid_from",
    )
    assert rows == [
        ("u1@2026-03-01T08:00:00.000000Z", "u1", 1, "personal", ts(1, 8), ts(2, 10)),
        ("u1@2026-03-02T10:00:00.000000Z", "u1", 3, "personal", ts(2, 10), None),
        ("u2@2026-03-01T00:00:00.000000Z", "u2", 2, "premium", ts(1, 0), None),
    ]
