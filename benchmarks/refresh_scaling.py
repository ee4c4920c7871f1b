"""Cost of one micro-batch (one hour of new events) after 30, 90 and 180 days of history.

    .venv/bin/python benchmarks/refresh_scaling.py [--quick] [--days 30,90,180] [--users N]

For each history length (full: 30, 90 and 180 days of 2,000 users; quick: 10, 20 and 40 days of
300 users; the same users and rate, seed 7, ending at today's UTC midnight) a fresh child
process gets its own embedded broker, data directory and Dagster instance, and an empty
database of a private ``redis-server`` the benchmark starts. Untimed set-up: every event but the
last hour is published to Kafka, then the platform's layers run in process on the whole history
(bronze, dbt, every feature partition, a first, full online snapshot). Timed: the last hour is
published with ``LATE_EVENTS`` late transactions (re-identified copies of transactions 1-3 days
old), then, each as its own in-process run on the platform's definitions:

* ``ingestion``: the bronze assets (Kafka -> Delta);
* ``silver``: the dbt models and tests an arrival run of the ingest job builds
  (``kafka_arrivals_sensor``'s selection for the topics that received events: the models
  downstream of them, without the contract re-checks; silver and gold, incremental);
* ``features``: every feature group over the partitions the new events made stale (the range
  ``stale_feature_partitions_sensor`` requests: the earliest new event date .. today);
* ``snapshot``: the online snapshot (incremental: the entities whose newest row changed).

microbatch_s is their sum; ratio_to_30d divides it by the first (shortest) history's. Also
reported per history: the feature runs' source events read, the snapshot's rows read and
entities written, a full snapshot's time on the same tables (``snapshot_full_s``, afterwards),
the set-up time and the child's peak RSS. The account-profiles source (PostgreSQL) is left out
(its asset is told to skip: the profile features are null).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import REPO_ROOT, emit, free_port, peak_rss_mb

LATE_EVENTS = 20
SEED = 7
SNAPSHOT = "online/feature_snapshot"
PROFILES = "bronze/account_profiles"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Runner:
    """In-process runs of a selection of assets on the platform's definitions and instance."""

    def __init__(self) -> None:
        import dagster as dg

        from fraud_platform.tools.pipeline import load_definitions

        self.dg = dg
        self.instance = dg.DagsterInstance.get()
        self.defs = load_definitions()
        self.job = self.defs.resolve_implicit_global_asset_job_def()
        self.graph = self.defs.resolve_asset_graph()

    def keys(self, *groups: str) -> list:
        return [
            key
            for key in self.graph.get_all_asset_keys()
            if self.graph.get(key).group_name in groups and self.graph.get(key).is_materializable
        ]

    def run(
        self,
        keys: list,
        tags: dict[str, str] | None = None,
        config: dict | None = None,
        checks: list | None = None,
    ):
        """A run of ``keys`` with their checks (only ``checks``, when given)."""
        from fraud_platform.tools.pipeline import _config_for, _raise_unless_only_gated

        ops = {
            self.dg.AssetKey.from_user_string(key).to_python_identifier(): {"config": value}
            for key, value in (config or {}).items()
        }
        job, selection = self.job, keys
        if checks is not None:
            job = self.job.get_subset(asset_selection=set(keys), asset_check_selection=set(checks))
            selection = None
        result = job.execute_in_process(
            instance=self.instance,
            asset_selection=selection,
            run_config=_config_for({**QUIET, "ops": ops}, keys),
            raise_on_error=False,
            tags=tags or {},
        )
        _raise_unless_only_gated(result, ",".join(k.to_user_string() for k in keys[:3]))
        return result


def metadata(result, key: str) -> dict[str, Any]:
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.to_user_string() == key:
            return {k: v.value for k, v in materialization.metadata.items()}
    raise RuntimeError(f"the run materialized no {key}")


def slowest_dbt_nodes(result, count: int = 8) -> dict[str, float]:
    """The dbt models and tests of ``result`` that took longest (dbt's own timings)."""
    timings: dict[str, float] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        duration = materialization.metadata.get("Execution Duration")
        if duration is not None:
            timings[materialization.asset_key.path[-1]] = duration.value
    for evaluation in result.get_asset_check_evaluations():
        duration = evaluation.metadata.get("Execution Duration")
        if duration is not None:
            timings[evaluation.check_name] = duration.value
    slowest = sorted(timings.items(), key=lambda item: -item[1])[:count]
    return {name: round(seconds, 2) for name, seconds in slowest}


def late_transactions(transactions: list[dict], cut) -> list[dict[str, Any]]:
    """``LATE_EVENTS`` re-identified copies of transactions 1-3 days before ``cut``."""
    window = [
        t
        for t in transactions
        if cut - timedelta(days=3) <= t["event_time"] < cut - timedelta(days=1)
    ]
    step = max(1, len(window) // LATE_EVENTS)
    return [
        {**t, "transaction_id": f"{t['transaction_id']}-late"} for t in window[::step][:LATE_EVENTS]
    ]


def one_history(days: int, users: int) -> dict[str, Any]:
    """Set up ``days`` of history and time one micro-batch (module docstring); in a child
    process whose environment names its own data directory, broker and Redis."""
    from fraud_platform import names
    from fraud_platform.defs.features.jobs import first_new_event_date, stale_partition_range
    from fraud_platform.defs.ingestion.assets import arrivals_selection
    from fraud_platform.defs.partitions import FEATURE_PARTITIONS
    from fraud_platform.lib.contracts.events import ALL_TOPICS, TRANSACTIONS
    from fraud_platform.lib.kafka.admin import ensure_topics
    from fraud_platform.lib.kafka.producer import event_messages, produce
    from fraud_platform.lib.simulation import SimulationConfig, publish, simulate
    from fraud_platform.settings import Settings
    from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
    from fraud_platform.tools.demo import recent_start
    from fraud_platform.tools.instance import prepare_dagster_home
    from fraud_platform.tools.pipeline import prepare_dbt_manifest

    settings = Settings.from_env()
    spec = BrokerSpec("noida", free_port(), settings.data_dir / "broker")
    start_broker(spec)
    bootstrap = f"127.0.0.1:{spec.port}"
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    try:
        ensure_topics(bootstrap, list(ALL_TOPICS))
        started = time.perf_counter()
        start = recent_start(days)
        simulation = simulate(SimulationConfig(days=days, users=users, seed=SEED, start=start))
        end = start + timedelta(days=days)
        cut = end - timedelta(hours=1)
        history = publish(simulation, bootstrap, until=cut)
        say(f"{days} days: published {sum(history.values()):,} history events")
        prepare_dagster_home(Settings.from_env())
        prepare_dbt_manifest()
        runner = Runner()
        skip = {PROFILES: {"when_unreachable": "skip"}}
        feature_keys = [k for k in runner.keys("features") if k.to_user_string() != SNAPSHOT]
        snapshot_key = [k for k in runner.keys("features") if k.to_user_string() == SNAPSHOT]
        runner.run(runner.keys("ingestion"), config=skip)
        runner.run(runner.keys("transform"))
        whole = {
            "dagster/asset_partition_range_start": start.date().isoformat(),
            "dagster/asset_partition_range_end": FEATURE_PARTITIONS.get_last_partition_key(),
        }
        runner.run(feature_keys, tags=whole)
        runner.run(snapshot_key)
        setup_s = time.perf_counter() - started
        say(f"{days} days: set up in {setup_s:.0f} s")

        new = publish(simulation, bootstrap, since=cut, until=end)
        late = late_transactions(simulation.transactions, cut)
        produce(bootstrap, event_messages((TRANSACTIONS, event) for event in late))
        per_layer: dict[str, float] = {}
        clock = time.perf_counter()
        ingested = runner.run(runner.keys("ingestion"), config=skip)
        per_layer["ingestion"] = time.perf_counter() - clock
        arrived = sorted({topic for topic, count in new.items() if count} | {TRANSACTIONS})
        assets, checks = arrivals_selection(runner.defs.get_repository_def(), arrived)
        transform = set(runner.keys("transform"))
        clock = time.perf_counter()
        silver = runner.run(
            [key for key in assets if key in transform],
            tags={names.ARRIVALS_TAG: json.dumps({topic: new.get(topic, 0) for topic in arrived})},
            checks=[check for check in checks if check.asset_key in transform],
        )
        per_layer["silver"] = time.perf_counter() - clock
        first, last = stale_partition_range(
            first_new_event_date(runner.instance, ingested.run_id),
            FEATURE_PARTITIONS.get_last_partition_key(),
        )
        clock = time.perf_counter()
        features = runner.run(
            feature_keys,
            tags={
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last,
            },
        )
        per_layer["features"] = time.perf_counter() - clock
        clock = time.perf_counter()
        snapshot = metadata(runner.run(snapshot_key), SNAPSHOT)
        per_layer["snapshot"] = time.perf_counter() - clock
        clock = time.perf_counter()
        full = metadata(runner.run(snapshot_key, config={SNAPSHOT: {"full": True}}), SNAPSHOT)
        snapshot_full_s = time.perf_counter() - clock
    finally:
        stop_broker(spec)
    source_read = sum(
        metadata(features, k.to_user_string())["source_events_read"] for k in feature_keys
    )
    bronze_added = sum(
        int(metadata(ingested, table).get("rows_added", 0))
        for table in names.BRONZE_TABLES.values()
    )
    return {
        "days": days,
        "users": users,
        "history_events": sum(history.values()),
        "new_events": sum(new.values()) + len(late),
        "late_events": len(late),
        "bronze_rows_added": bronze_added,
        "stale_partitions": f"{first}..{last}",
        "microbatch_s": round(sum(per_layer.values()), 2),
        "per_layer_s": {k: round(v, 2) for k, v in per_layer.items()},
        "feature_source_events_read": source_read,
        "slowest_dbt_nodes_s": slowest_dbt_nodes(silver),
        "feature_groups_s": {
            k.path[-1]: metadata(features, k.to_user_string())["compute_seconds"]
            for k in feature_keys
        },
        "snapshot_modes": sorted(set(snapshot["modes"].values())),
        "snapshot_rows_read": snapshot["rows_read"],
        "snapshot_entities_written": snapshot["entities_written"],
        "snapshot_full_s": round(snapshot_full_s, 2),
        "snapshot_full_rows_read": full["rows_read"],
        "setup_s": round(setup_s, 1),
        "peak_rss_mb": round(peak_rss_mb()),
    }


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
    parser.add_argument("--history-days", type=int, help=argparse.SUPPRESS)  # the child's
    args = parser.parse_args()
    users = args.users or (300 if args.quick else 2000)
    if args.history_days:
        print(json.dumps(one_history(args.history_days, users)), flush=True)
        return
    sizes = [int(d) for d in (args.days or ("10,20,40" if args.quick else "30,90,180")).split(",")]
    if sorted(sizes) != sizes or len(set(sizes)) != len(sizes) or sizes[0] < 2:
        sys.exit(f"--days must be increasing history lengths of at least 2 days: {sizes}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="refresh_scaling_") as tmp:
        redis_process, redis_url = start_redis(Path(tmp))
        try:
            for index, days in enumerate(sizes):
                data_dir = Path(tmp) / f"data{days}"
                env = {
                    **os.environ,
                    "FRAUD_PLATFORM_DATA_DIR": str(data_dir),
                    "REDIS_URL": f"{redis_url}/{index}",
                    # nothing listens there: the profiles asset skips (module docstring)
                    "FRAUD_PLATFORM_PROFILES_PG_URL": f"postgresql://bench@127.0.0.1:{free_port()}/none",
                }
                command = [
                    sys.executable,
                    __file__,
                    "--history-days",
                    str(days),
                    "--users",
                    str(users),
                ]
                done = subprocess.run(
                    command, env=env, cwd=REPO_ROOT, capture_output=True, text=True
                )
                if done.returncode != 0:
                    sys.exit(f"{days} days failed:\n{done.stderr[-4000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"{days:>4} days: {row['history_events']:>9,} events, micro-batch "
                    f"{row['microbatch_s']:.1f} s {row['per_layer_s']}",
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
