"""The batch path through the sensors: published event -> bronze row -> online feature row.

    .venv/bin/python benchmarks/sensor_freshness.py [--quick] [--rounds N]
        [--dagster-storage sqlite|postgres]

--quick: 2 days of history (60 users), 3 rounds of 5 transactions (~4-7 min on 2 shared
cores, most of it dagster dev's start-up and the warm-up); full: 7 days (400 users), 8 rounds
of 20. Last line: one JSON object with publish_to_bronze_p95_s and publish_to_online_p95_s.

Starts its own noida broker (free port), a private PostgreSQL database for the profiles source,
a data directory and DAGSTER_HOME under a temp dir, Redis database 9, and ``dagster dev`` (free
port; webserver, daemon and code server, as a user runs it) with the project's own
``dagster.yaml`` (``prepare_dagster_home``). ``kafka_arrivals_sensor`` is turned on through the
UI's GraphQL API, as a user does; ``stale_feature_partitions_sensor`` runs by default.

A few days of simulated history are published first and the warm-up waits until the sensors
brought them online (dbt's first build, the first feature backfill: not measured). Then each
round publishes a few transactions of new users with event_time = now and polls every 0.25 s
for the moment their rows are in ``bronze/transactions`` (Delta) and their ``user_txn_velocity``
rows (score = their event time) are in Redis: publish_to_bronze_s and publish_to_online_s.
The next round starts 0-5 s (seeded) after the previous one is online, so rounds meet the
sensors at every phase of their tick.

The profile per round comes from Dagster's own event log: sensor delay (publish -> run
created), launch (created -> started: queue, run worker start, code-location import), the
per-step launch overhead (multiprocess executor: step process start + import) and compute,
and the delay of the run-status sensor between the ingestion run and the feature refresh.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import (
    BENCH_REDIS_URL,
    PG_SERVER,
    REPO_ROOT,
    admin_pg,
    emit,
    free_port,
    percentile,
    redis_client,
)

LOCATION = "fraud_platform"
LOAD_DEADLINE_S = 300.0
POLL_S = 0.25


@dataclass(frozen=True)
class Plan:
    days: int
    users: int
    rounds: int
    per_round: int
    round_deadline_s: float


QUICK = Plan(days=2, users=60, rounds=3, per_round=5, round_deadline_s=600)
FULL = Plan(days=7, users=400, rounds=8, per_round=20, round_deadline_s=900)


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class DagsterDev:
    """``dagster dev`` in a session of its own; stopped by signalling the whole group."""

    def __init__(self, port: int, log_path: Path, env: dict[str, str]) -> None:
        from fraud_platform.tools.pipeline import dagster_dev_command, env_with_venv_on_path
        from fraud_platform.tools.processes import spawn_logged

        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process = spawn_logged(
            dagster_dev_command(port), log_path, cwd=REPO_ROOT, env=env_with_venv_on_path(env)
        )

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        import httpx

        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if "errors" in body:
            raise RuntimeError(body["errors"])
        return body["data"]

    def wait_loaded(self) -> float:
        started = time.monotonic()
        query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
        while time.monotonic() - started < LOAD_DEADLINE_S:
            if self.process.poll() is not None:
                raise RuntimeError(f"dagster dev exited: {self.tail()}")
            try:
                entries = self.graphql(query)["workspaceOrError"].get("locationEntries") or []
            except Exception:  # noqa: BLE001 - not answering yet
                entries = []
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return time.monotonic() - started
            time.sleep(1)
        raise RuntimeError(f"code location not loaded after {LOAD_DEADLINE_S}s: {self.tail()}")

    def start_sensor(self, name: str) -> None:
        mutation = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
            __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
        result = self.graphql(mutation, {"s": {**selector, "sensorName": name}})["startSensor"]
        if result["__typename"] != "Sensor":
            raise RuntimeError(f"could not start {name}: {result}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 10) -> None:
        pgid = self.process.pid  # start_new_session: the leader's pid is the group id
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            self.process.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.25)
        os.killpg(pgid, signal.SIGKILL)  # the code server and webserver can outlive SIGTERM
        self.process.wait(timeout=10)


class Probe:
    """Polls bronze (Delta) and the online store (Redis) for a round's transactions."""

    def __init__(self, delta_root: str, redis: Any) -> None:
        self.bronze = f"{delta_root}/bronze/transactions"
        self.redis = redis

    def in_bronze(self, ids: list[str]) -> bool:
        import polars as pl
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(self.bronze):
            return False
        found = (
            pl.scan_delta(self.bronze)
            .filter(pl.col("transaction_id").is_in(ids))
            .select(pl.len())
            .collect()
            .item()
        )
        return found == len(ids)

    def online(self, rows: list[tuple[str, int]]) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        for key, micros in rows:
            pipe.zcount(key, micros, micros)
        return all(count > 0 for count in pipe.execute())


def round_transactions(template: dict, tag: str, n: int) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            **template,
            "transaction_id": f"{tag}-t{i}",
            "user_id": f"{tag}-u{i}",
            "card_id": f"{tag}-c{i}",
            "event_time": now - timedelta(milliseconds=n - i),
            "counterparty_id": None,
            "channel": "ecommerce",
        }
        for i in range(n)
    ]


def wait_for(check: Any, deadline: float, dev: DagsterDev) -> float | None:
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        if dev.process.poll() is not None:
            raise RuntimeError(f"dagster dev exited: {dev.tail()}")
        time.sleep(POLL_S)
    return None


# --------------------------------------------------------------------------------------------
# The profile, from Dagster's event log


def run_profile(instance: Any, record: Any) -> dict[str, Any]:
    """Launch, steps (launch overhead and compute) and wall time of one run."""
    import dagster as dg

    run = record.dagster_run
    starts: dict[str, float] = {}
    worker: dict[str, float] = {}
    compute: dict[str, float] = {}
    enqueued = record.create_timestamp.timestamp()
    for entry in instance.all_logs(run.run_id):
        event = entry.dagster_event
        if event is not None and event.event_type == dg.DagsterEventType.RUN_ENQUEUED:
            enqueued = entry.timestamp
        if event is None or event.step_key is None:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_WORKER_STARTING:
            worker[event.step_key] = entry.timestamp
        elif kind == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            if event.step_key in starts:
                compute[event.step_key] = entry.timestamp - starts[event.step_key]
    overhead = {k: starts[k] - worker[k] for k in starts if k in worker}
    return {
        "run_id": run.run_id,
        "status": run.status.value,
        "created": record.create_timestamp.timestamp(),
        "launch_s": (record.start_time or 0) - record.create_timestamp.timestamp(),
        # run created -> queued: the execution plan and one "planned" event per asset and check
        "create_s": enqueued - record.create_timestamp.timestamp(),
        "wall_s": (record.end_time or 0) - (record.start_time or 0),
        "steps": len(starts),
        "step_launch_s_sum": sum(overhead.values()),
        "step_compute_s_sum": sum(compute.values()),
        "step_compute_s": {k: round(v, 2) for k, v in sorted(compute.items())},
        "end": record.end_time or 0,
    }


def round_profile(instance: Any, published_unix: float) -> dict[str, Any]:
    """The ingest run that took the round's events and the refresh run that followed it."""
    import dagster as dg

    ingests = instance.get_run_records(
        dg.RunsFilter(job_name="ingest_job", created_after=datetime.fromtimestamp(published_unix))
    )
    if not ingests:
        return {}
    ingest_record = min(ingests, key=lambda r: r.create_timestamp)
    ingest = run_profile(instance, ingest_record)
    out: dict[str, Any] = {
        "sensor_s": round(ingest["created"] - published_unix, 2),
        "ingest_launch_s": round(ingest["launch_s"], 2),
        "ingest_create_s": round(ingest["create_s"], 2),
        "ingest_wall_s": round(ingest["wall_s"], 2),
        "ingest_steps": ingest["steps"],
        "ingest_step_launch_s": round(ingest["step_launch_s_sum"], 2),
        "ingest_step_compute_s": ingest["step_compute_s"],
    }
    refreshes = instance.get_run_records(
        dg.RunsFilter(
            job_name="feature_refresh_job",
            tags={"fraud_platform/after_ingest_run": ingest["run_id"]},
        )
    )
    if refreshes:
        refresh = run_profile(instance, refreshes[0])
        out.update(
            {
                "refresh_sensor_s": round(refresh["created"] - ingest["end"], 2),
                "refresh_launch_s": round(refresh["launch_s"], 2),
                "refresh_create_s": round(refresh["create_s"], 2),
                "refresh_wall_s": round(refresh["wall_s"], 2),
                "refresh_steps": refresh["steps"],
                "refresh_step_launch_s": round(refresh["step_launch_s_sum"], 2),
                "refresh_step_compute_s_sum": round(refresh["step_compute_s_sum"], 2),
            }
        )
    return out


def median_split(profiles: list[dict[str, Any]]) -> dict[str, float]:
    keys = [k for k in (profiles[0] if profiles else {}) if isinstance(profiles[0][k], float | int)]
    return {
        k: round(statistics.median(p[k] for p in profiles if k in p), 2)
        for k in keys
        if any(k in p for p in profiles)
    }


# --------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dagster-storage",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="Dagster's own storage: SQLite under DAGSTER_HOME (the default instance) or a "
        "private PostgreSQL database (FRAUD_PLATFORM_DAGSTER_PG_URL, as in production)",
    )
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    rounds = args.rounds or plan.rounds
    wall = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="sensor_freshness_"))
    data_dir = tmp / "data"
    database = f"sensor_bench_{os.getpid()}"
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=plan.days)
    os.environ.update(
        {
            "FRAUD_PLATFORM_DATA_DIR": str(data_dir),
            "DAGSTER_HOME": str(data_dir / "dagster_home"),
            "REDIS_URL": BENCH_REDIS_URL,
            "FRAUD_PLATFORM_PROFILES_PG_URL": f"{PG_SERVER}/{database}",
            "FRAUD_PLATFORM_PARTITIONS_START": start.date().isoformat(),
            "PYTHONUNBUFFERED": "1",
        }
    )
    os.environ.pop("FRAUD_PLATFORM_DAGSTER_PG_URL", None)
    databases = [database]
    if args.dagster_storage == "postgres":
        databases.append(f"{database}_dagster")
        os.environ["FRAUD_PLATFORM_DAGSTER_PG_URL"] = f"{PG_SERVER}/{databases[1]}"
    from fraud_platform.lib.contracts.events import ALL_TOPICS
    from fraud_platform.lib.features.catalog import USER_TXN_VELOCITY
    from fraud_platform.lib.features.online.layout import online_key, to_micros
    from fraud_platform.lib.kafka.admin import ensure_topics
    from fraud_platform.lib.kafka.producer import event_messages, produce
    from fraud_platform.lib.simulation import SimulationConfig, publish, simulate
    from fraud_platform.settings import Settings
    from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
    from fraud_platform.tools.demo import seed_simulated_profiles
    from fraud_platform.tools.instance import prepare_dagster_home
    from fraud_platform.tools.pipeline import prepare_dbt_manifest

    redis = redis_client()
    redis.flushdb()
    for name in databases:
        admin_pg(f"CREATE DATABASE {name}")
    spec = BrokerSpec("noida", free_port(), tmp / "broker")
    dev: DagsterDev | None = None
    try:
        start_broker(spec)
        bootstrap = spec.bootstrap
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        ensure_topics(bootstrap, list(ALL_TOPICS))
        settings = Settings.from_env()
        home = prepare_dagster_home(settings)
        (home / ".nux").mkdir(parents=True, exist_ok=True)
        (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        prepare_dbt_manifest()
        simulation = simulate(
            SimulationConfig(days=plan.days, users=plan.users, seed=args.seed, start=start)
        )
        seed_simulated_profiles(settings, args.seed, plan.users, start, say)
        counts = publish(simulation, bootstrap, until=datetime.now(UTC))
        say(f"history: {plan.days} days, {counts} published")
        template = {k: v for k, v in simulation.transactions[-1].items()}

        dev = DagsterDev(free_port(), tmp / "dagster_dev.log", dict(os.environ))
        load_s = dev.wait_loaded()
        say(f"dagster dev loaded in {load_s:.1f}s")
        dev.start_sensor("kafka_arrivals_sensor")
        probe = Probe(settings.delta_uri, redis)
        import dagster as dg

        instance = dg.DagsterInstance.get()

        # warm-up: the history's first ingestion, dbt's first build, the first backfill
        warm = time.monotonic()
        last_txn = simulation.transactions[-1]
        warm_key = (online_key(USER_TXN_VELOCITY, last_txn["user_id"]), to_micros(last_txn["event_time"]))  # fmt: skip
        if wait_for(lambda: probe.online([warm_key]), warm + 1200, dev) is None:
            raise RuntimeError(f"history not online after 1200s: {dev.tail()}")
        warm_s = time.monotonic() - warm
        say(f"warm-up (history ingested, features backfilled, online) in {warm_s:.0f}s")

        rng = random.Random(args.seed)
        bronze_s: list[float] = []
        online_s: list[float] = []
        profiles: list[dict[str, Any]] = []
        load = []
        for r in range(rounds):
            time.sleep(rng.uniform(0, 5))
            txns = round_transactions(template, f"r{r}-{os.getpid()}", plan.per_round)
            ids = [t["transaction_id"] for t in txns]
            keys = [(online_key(USER_TXN_VELOCITY, t["user_id"]), to_micros(t["event_time"])) for t in txns]  # fmt: skip
            produce(bootstrap, event_messages([("transactions", t) for t in txns]), flush_timeout_s=10)  # fmt: skip
            published, published_unix = time.monotonic(), time.time()
            deadline = published + plan.round_deadline_s
            at_bronze = wait_for(lambda ids=ids: probe.in_bronze(ids), deadline, dev)
            at_online = wait_for(lambda keys=keys: probe.online(keys), deadline, dev)
            if at_bronze is None or at_online is None:
                raise RuntimeError(f"round {r}: not through after {plan.round_deadline_s}s")
            bronze_s.append(at_bronze - published)
            online_s.append(at_online - published)
            load.append(os.getloadavg()[0])
            time.sleep(1)  # the refresh run's end is recorded just after its last write
            profile = round_profile(instance, published_unix)
            profiles.append(profile)
            say(
                f"round {r}: bronze {bronze_s[-1]:.1f}s, online {online_s[-1]:.1f}s, "
                f"load {load[-1]:.1f}; {json.dumps(profile)}"
            )
        split = median_split(profiles)
        results = {
            "quick": args.quick,
            "dagster_storage": args.dagster_storage,
            "rounds": rounds,
            "events_per_round": plan.per_round,
            "history_days": plan.days,
            "history_events": sum(counts.values()),
            "publish_to_bronze_s": [round(x, 1) for x in bronze_s],
            "publish_to_online_s": [round(x, 1) for x in online_s],
            "publish_to_bronze_p50_s": round(statistics.median(bronze_s), 1),
            "publish_to_online_p50_s": round(statistics.median(online_s), 1),
            "publish_to_bronze_p95_s": round(percentile(sorted(bronze_s), 95), 1),
            "publish_to_online_p95_s": round(percentile(sorted(online_s), 95), 1),
            "split_median_s": split,
            "code_location_load_s": round(load_s, 1),
            "warmup_s": round(warm_s, 1),
            "loadavg_1m": [round(x, 1) for x in load],
            "seconds": round(time.perf_counter() - wall, 1),
        }
        emit(results)
        return 0
    except BaseException:
        if dev is not None:  # the temp dir goes: keep the log of a failed run
            kept = Path(tempfile.gettempdir()) / f"sensor_freshness_{os.getpid()}.log"
            kept.write_bytes(dev.log_path.read_bytes())
            say(f"failed; dagster dev's log kept at {kept}")
        raise
    finally:
        if dev is not None:
            dev.stop()
        stop_broker(spec)
        redis.flushdb()
        for name in databases:
            try:
                admin_pg(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception as exc:  # noqa: BLE001 - report, the temp data is still removed
                say(f"could not drop {name}: {exc}")
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    sys.exit(main())
