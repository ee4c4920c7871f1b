"""Incremental `dbt build` after one new hour of events vs a full rebuild of silver and gold.

    .venv/bin/python benchmarks/dbt_incremental.py [--quick] [--days N] [--users N]

Simulates ``--days`` of traffic (default 30 days, 2,000 users: the demo's scale; ``--quick`` 10
days, 500 users) and writes it to the bronze Delta tables as one ingestion commit, minus the last
hour. `dbt build` builds the warehouse from that history (untimed). Then one ingestion commit
brings the last hour plus a few late events (re-identified copies of earlier events, dated up to
a week back) and re-deliveries of already built transactions, and the benchmark times, on two
copies of the same warehouse:
* incremental: `dbt build` (silver merges the new deliveries, gold recomputes the touched days);
* full: `dbt build --full-refresh` (every silver and gold table rebuilt from all of bronze).
Both include dbt's own start-up and its data tests. Afterwards the two warehouses must hold the
same silver and gold rows (checked, reported as ``equal``). ratio = incremental_s / full_s;
models_ratio is the same for the silver and gold models' own execution time (run_results.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

import duckdb
import pyarrow as pa
from deltalake import write_deltalake

from benchmarks._common import emit
from fraud_platform.defs.transform.project import DBT_PROJECT_DIR, dbt_executable
from fraud_platform.lib.contracts.events import (
    EVENT_DATE_COLUMN,
    EVENT_TIME_FIELD,
    TOPICS,
    TRANSACTIONS,
    bronze_schema,
)
from fraud_platform.lib.ingestion.profiles import BRONZE_SCHEMA as PROFILES_SCHEMA
from fraud_platform.lib.ingestion.profiles import BRONZE_TABLE as PROFILES_TABLE
from fraud_platform.lib.simulation import SimulationConfig, simulate

LATE_EVENTS = 50
REDELIVERIES = 20
TABLES = (
    "silver.fct_transactions",
    "silver.fct_account_events",
    "silver.fct_labels",
    "silver.fct_merchant_fraud_labels",
    "silver.dim_users",
    "gold.agg_user_daily",
    "gold.agg_merchant_daily",
)


def bronze_rows(
    topic: str, events: list[dict[str, Any]], ingested_at: datetime, first_offset: int
) -> pa.Table:
    time_field = EVENT_TIME_FIELD[topic]
    rows = [
        {
            **event,
            "_topic": topic,
            "_partition": 0,
            "_offset": first_offset + index,
            "_ingested_at": ingested_at,
            EVENT_DATE_COLUMN: event[time_field].astimezone(UTC).date(),
        }
        for index, event in enumerate(events)
    ]
    return pa.Table.from_pylist(rows, schema=bronze_schema(topic))


def append(delta_root: Path, topic: str, table: pa.Table) -> None:
    path = str(delta_root / "bronze" / topic)
    write_deltalake(path, table, mode="append", partition_by=[EVENT_DATE_COLUMN])


def dbt_build(warehouse: Path, delta_root: Path, workdir: Path, *flags: str) -> tuple[float, float]:
    """Wall time of the whole `dbt build`, and the summed execution time of its silver and gold
    models alone (from run_results.json: no start-up, parsing, views or data tests)."""
    command = [dbt_executable(), "build", *flags, "--project-dir", str(DBT_PROJECT_DIR)]
    command += ["--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(workdir / "target")]
    command += ["--log-path", str(workdir / "logs")]
    env = {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(workdir),
        "FRAUD_PLATFORM_WAREHOUSE": str(warehouse),
        "FRAUD_PLATFORM_DELTA_ROOT_LOCAL": str(delta_root),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dbt build {' '.join(flags)} failed:\n{done.stdout[-3000:]}")
    results = json.loads((workdir / "target" / "run_results.json").read_text())["results"]
    per_model = {
        result["unique_id"].split(".")[-1]: round(result["execution_time"], 2)
        for result in results
        if result["unique_id"].split(".")[-1].startswith(("fct_", "dim_", "agg_"))
        and result["unique_id"].startswith("model.")
    }
    print(f"dbt build {' '.join(flags)}: {elapsed:.1f} s; models: {per_model}")
    return elapsed, sum(per_model.values())


def same_rows(left: Path, right: Path) -> bool:
    with duckdb.connect(str(left), read_only=True) as con:
        con.execute(f"attach '{right}' as other (read_only)")
        for table in TABLES:
            schema, name = table.split(".")
            other = f"other.{schema}.{name}"
            diff = f"(select * from {table} except all select * from {other}) union all "
            diff += f"(select * from {other} except all select * from {table})"
            if con.execute(f"select count(*) from ({diff})").fetchone() != (0,):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--days", type=int)
    parser.add_argument("--users", type=int)
    args = parser.parse_args()
    days = args.days or (10 if args.quick else 30)
    users = args.users or (500 if args.quick else 2000)

    simulation = simulate(SimulationConfig(days=days, users=users))
    by_topic = simulation.events_by_topic()
    cut = max(event["event_time"] for event in simulation.transactions) - timedelta(hours=1)
    history_at = cut + timedelta(hours=1, minutes=1)  # ingestion times: history, then the hour
    new_at = history_at + timedelta(hours=1)
    history_events = 0
    with tempfile.TemporaryDirectory(prefix="bench_dbt_incr_") as tmp:
        root = Path(tmp)
        delta_root, base = root / "delta", root / "base.duckdb"
        write_deltalake(
            str(delta_root / PROFILES_TABLE), pa.Table.from_pylist([], schema=PROFILES_SCHEMA)
        )
        new_hour: dict[str, list[dict[str, Any]]] = {}
        for topic in TOPICS:
            field = EVENT_TIME_FIELD[topic]
            old = [event for event in by_topic[topic] if event[field] <= cut]
            new_hour[topic] = [event for event in by_topic[topic] if event[field] > cut]
            history_events += len(old)
            append(delta_root, topic, bronze_rows(topic, old, history_at, 0))
        history = [event for event in simulation.transactions if event["event_time"] <= cut]
        step = max(1, len(history) // (LATE_EVENTS + REDELIVERIES))
        sample = history[::step][: LATE_EVENTS + REDELIVERIES]
        late = [
            {
                **event,
                "transaction_id": f"{event['transaction_id']}-late",
                "event_time": max(event["event_time"], cut - timedelta(days=7)),
            }
            for event in sample[:LATE_EVENTS]
        ]
        new_hour[TRANSACTIONS] += late + sample[LATE_EVENTS:]
        dbt_build(base, delta_root, root / "base")

        for topic in TOPICS:
            append(delta_root, topic, bronze_rows(topic, new_hour[topic], new_at, 10**9))
        incremental, full = root / "incremental.duckdb", root / "rebuilt.duckdb"
        shutil.copy(base, incremental)
        shutil.copy(base, full)
        incremental_s, incremental_models_s = dbt_build(
            incremental, delta_root, root / "incremental"
        )
        full_s, full_models_s = dbt_build(full, delta_root, root / "full", "--full-refresh")
        equal = same_rows(incremental, full)

    new_events = sum(len(events) for events in new_hour.values())
    emit(
        {
            "days": days,
            "users": users,
            "history_events": history_events,
            "new_events": new_events,
            "late_events": LATE_EVENTS,
            "redeliveries": REDELIVERIES,
            "full_s": round(full_s, 2),
            "incremental_s": round(incremental_s, 2),
            "ratio": round(incremental_s / full_s, 3),
            "full_models_s": round(full_models_s, 2),
            "incremental_models_s": round(incremental_models_s, 2),
            "models_ratio": round(incremental_models_s / full_models_s, 3),
            "equal": equal,
        }
    )
    if not equal:
        sys.exit("incremental and full-refresh warehouses differ")


if __name__ == "__main__":
    main()
