"""Cost of one micro-batch (one hour of new events) after 30, 90 and 180 days of history.

    .venv/bin/python benchmarks/refresh_scaling.py [--quick] [--days 30,90,180] [--users N] [--batches 3]

For each history length (full: 30, 90 and 180 days of 2,000 users; quick: 10, 20 and 40 days of
300 users; the same users and rate, seed 7, ending at today's UTC midnight) the history gets its
own embedded broker, data directory and Dagster instance, and an empty database of a private
``redis-server`` the benchmark starts. Untimed set-up, in a child process: every event but the
last ``--batches`` hours is published to Kafka, then the platform's layers run in process on
the whole history (bronze, dbt, every feature partition, a first, full online snapshot). Timed,
each in a fresh child process (``_refresh_history.py`` says why): one of those hours is
published with ``LATE_EVENTS`` late transactions (re-identified copies of transactions 1-3 days
old), then, each as its own in-process run on the platform's definitions:

* ``ingestion``: the bronze assets (Kafka -> Delta);
* ``silver``: the dbt models and tests an arrival run of the ingest job builds
  (``kafka_arrivals_sensor``'s selection for the topics that received events: the models
  downstream of them, without the contract re-checks; silver and gold, incremental);
* ``features``: every feature group over the partitions the new events made stale (the range
  ``stale_feature_partitions_sensor`` requests: the earliest new event date .. today);
* ``snapshot``: the online snapshot (incremental: the entities whose newest row changed).

A micro-batch's time is their sum; a history's ``microbatch_s`` is the median over its hours
(``batches_s`` lists them all; the table row holds the median hour's figures), and
ratio_to_30d divides it by the first (shortest) history's. Also reported per history: the
feature runs' source events read, the snapshot's rows read and entities written, a full
snapshot's time on the same tables (``snapshot_full_s``, after the last hour), the set-up time
and peak RSS, each hour's peak RSS and the garbage collector's pauses during its timed runs
(``gc_pause_s``). The account-profiles source (PostgreSQL) is left out (its asset is told to
skip: the profile features are null). ``--dagster-postgres URL`` keeps Dagster's storage (runs,
events, the asset index) on PostgreSQL instead of SQLite, as in production.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, emit, free_port
from _refresh_history import BROKER_PORT_ENV, set_up, time_batch


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_history(days: int, users: int, batches: int, env: dict[str, str]) -> dict[str, Any]:
    """Set ``days`` of history up, then time its ``batches`` hours one by one."""
    from fraud_platform.tools.brokers import BrokerSpec, stop_broker

    env = {**env, BROKER_PORT_ENV: str(free_port())}
    data_dir = Path(env["FRAUD_PLATFORM_DATA_DIR"])
    spec = BrokerSpec("noida", int(env[BROKER_PORT_ENV]), data_dir / "broker")
    try:
        common = ["--history-days", str(days), "--users", str(users), "--batches", str(batches)]
        setup = _child([*common, "--phase", "setup"], env)
        say(f"{days} days: {setup['history_events']:,} events set up in {setup['setup_s']:.0f} s")
        hours = []
        for batch in range(batches):
            hours.append(_child([*common, "--phase", f"batch{batch}"], env))
            say(f"{days} days: hour {batch + 1}/{batches} {hours[-1]['microbatch_s']:.1f} s")
    finally:
        stop_broker(spec)
    times = [hour["microbatch_s"] for hour in hours]
    median = statistics.median(times)
    row = min(hours, key=lambda hour: abs(hour["microbatch_s"] - median))
    return {
        "days": days,
        "users": users,
        **setup,
        **{k: v for k, v in row.items() if k not in ("snapshot_full_s", "snapshot_full_rows_read")},
        "microbatch_s": round(median, 2),
        "batches_s": times,
        "snapshot_full_s": hours[-1]["snapshot_full_s"],
        "snapshot_full_rows_read": hours[-1]["snapshot_full_rows_read"],
    }


@contextlib.contextmanager
def dagster_database(server_url: str | None, days: int) -> Iterator[str | None]:
    """A fresh database on ``server_url`` (None: nothing), dropped afterwards."""
    if not server_url:
        yield None
        return
    import psycopg2

    name = f"refresh_scaling_{os.getpid()}_{days}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'create database "{name}"')
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'drop database if exists "{name}" with (force)')
        admin.close()


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port, socket_timeout=5)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    else:
        process.kill()
        raise SystemExit(f"redis-server on port {port} did not answer")
    client.close()
    return process, f"redis://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--days", help="comma-separated history lengths")
    parser.add_argument("--users", type=int)
    parser.add_argument("--batches", type=int, help="timed hours per history (3; quick: 2)")
    parser.add_argument(
        "--dagster-postgres",
        metavar="URL",
        help="Dagster's storage on this PostgreSQL server (a fresh database per history, "
        "dropped after), as a production deployment runs it; default: SQLite under each "
        "history's data directory",
    )
    parser.add_argument("--history-days", type=int, help=argparse.SUPPRESS)  # the children's
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # setup | batch<N>
    args = parser.parse_args()
    users = args.users or (300 if args.quick else 2000)
    args.batches = args.batches or (2 if args.quick else 3)
    if args.history_days:
        if args.phase == "setup":
            row = set_up(args.history_days, users, args.batches)
        else:
            batch = int(args.phase.removeprefix("batch"))
            row = time_batch(batch, full_snapshot=batch == args.batches - 1)
        print(json.dumps(row), flush=True)
        return
    if args.batches < 1:
        sys.exit("--batches must be at least 1")
    sizes = [int(d) for d in (args.days or ("10,20,40" if args.quick else "30,90,180")).split(",")]
    if sorted(sizes) != sizes or len(set(sizes)) != len(sizes) or sizes[0] < 2:
        sys.exit(f"--days must be increasing history lengths of at least 2 days: {sizes}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="refresh_scaling_") as tmp:
        redis_process, redis_url = start_redis(Path(tmp))
        try:
            for index, days in enumerate(sizes):
                env = {
                    **os.environ,
                    "FRAUD_PLATFORM_DATA_DIR": str(Path(tmp) / f"data{days}"),
                    "REDIS_URL": f"{redis_url}/{index}",
                    # nothing listens there: the profiles asset skips (module docstring)
                    "FRAUD_PLATFORM_PROFILES_PG_URL": f"postgresql://bench@127.0.0.1:{free_port()}/none",
                }
                with dagster_database(args.dagster_postgres, days) as dagster_url:
                    if dagster_url:
                        env["FRAUD_PLATFORM_DAGSTER_PG_URL"] = dagster_url
                    row = one_history(days, users, args.batches, env)
                rows.append(row)
                print(
                    f"{days:>4} days: {row['history_events']:>9,} events, micro-batch "
                    f"{row['microbatch_s']:.1f} s (hours {row['batches_s']}) {row['per_layer_s']}",
                    flush=True,
                )
        finally:
            redis_process.terminate()
            redis_process.wait(timeout=10)
    base = rows[0]["microbatch_s"]
    for row in rows:
        row["ratio_to_30d"] = round(row["microbatch_s"] / base, 3)
    emit(
        {
            "days": [row["days"] for row in rows],
            "users": users,
            "history_events": [row["history_events"] for row in rows],
            "microbatch_s": [row["microbatch_s"] for row in rows],
            "ratio_to_30d": [row["ratio_to_30d"] for row in rows],
            "per_layer_s": [row["per_layer_s"] for row in rows],
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "table": rows,
        }
    )


if __name__ == "__main__":
    main()
