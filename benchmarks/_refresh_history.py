"""The child processes of ``refresh_scaling.py``: one sets a history up, then each timed
micro-batch runs in a fresh process of its own, as a deployment's run launcher starts one per
run. Their environment names the history's data directory, Redis database and broker port.

Why a fresh process per micro-batch: the set-up process ends with the history's Python objects
and Dagster's in-process caches on its heap (3.2 GB peak at 180 days against 1.5 GB at 30), and
a run timed behind them pays for them (full collections, a colder allocator), a cost that grows
with history and that no launched run has.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from _common import peak_rss_mb

LATE_EVENTS = 20
SEED = 7
SNAPSHOT = "online/feature_snapshot"
PROFILES = "bronze/account_profiles"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
SKIP_PROFILES = {PROFILES: {"when_unreachable": "skip"}}
BROKER_PORT_ENV = "REFRESH_SCALING_BROKER_PORT"


def broker_spec():
    from fraud_platform.settings import Settings
    from fraud_platform.tools.brokers import BrokerSpec

    port = int(os.environ[BROKER_PORT_ENV])
    return BrokerSpec("noida", port, Settings.from_env().data_dir / "broker")


def _batches_file() -> Path:
    from fraud_platform.settings import Settings

    return Settings.from_env().data_dir / "microbatches.pkl"


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

    def feature_keys(self) -> tuple[list, list]:
        """The feature groups' keys, and the online snapshot's."""
        keys = self.keys("features")
        return (
            [k for k in keys if k.to_user_string() != SNAPSHOT],
            [k for k in keys if k.to_user_string() == SNAPSHOT],
        )

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


def dbt_node_seconds(result) -> dict[str, float]:
    """dbt's own timing of each model and test of ``result``, slowest first."""
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
    return {name: round(s, 3) for name, s in sorted(timings.items(), key=lambda kv: -kv[1])}


def late_transactions(transactions: list[dict], cut, batch: int) -> list[dict[str, Any]]:
    """``LATE_EVENTS`` re-identified copies of transactions 1-3 days before ``cut``."""
    window = [
        t
        for t in transactions
        if cut - timedelta(days=3) <= t["event_time"] < cut - timedelta(days=1)
    ]
    step = max(1, len(window) // LATE_EVENTS)
    return [
        {**t, "transaction_id": f"{t['transaction_id']}-late{batch}"}
        for t in window[::step][:LATE_EVENTS]
    ]


class GcPauses:
    """The time the cyclic garbage collector paused the process between start and ``stop``."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started

    def stop(self) -> float:
        gc.callbacks.remove(self._callback)
        return self.total


def set_up(days: int, users: int, batches: int) -> dict[str, Any]:
    """Publish ``days`` of history but the last ``batches`` hours and run every layer on it;
    keep each of those hours (with its late copies) for ``time_batch``."""
    from fraud_platform.defs.partitions import FEATURE_PARTITIONS
    from fraud_platform.lib.contracts.events import ALL_TOPICS, TRANSACTIONS
    from fraud_platform.lib.kafka.admin import ensure_topics
    from fraud_platform.lib.simulation import SimulationConfig, publish, simulate
    from fraud_platform.lib.simulation.publisher import merged_window
    from fraud_platform.settings import Settings
    from fraud_platform.tools.brokers import start_broker
    from fraud_platform.tools.demo import recent_start
    from fraud_platform.tools.instance import prepare_dagster_home
    from fraud_platform.tools.pipeline import prepare_dbt_manifest

    spec = broker_spec()
    start_broker(spec)
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = spec.bootstrap
    ensure_topics(spec.bootstrap, list(ALL_TOPICS))
    started = time.perf_counter()
    start = recent_start(days)
    simulation = simulate(SimulationConfig(days=days, users=users, seed=SEED, start=start))
    end = start + timedelta(days=days)
    history = publish(simulation, spec.bootstrap, until=end - timedelta(hours=batches))
    hours = []
    for batch in range(batches):
        since = end - timedelta(hours=batches - batch)
        events = list(merged_window(simulation, since=since, until=since + timedelta(hours=1)))
        late = late_transactions(simulation.transactions, since, batch)
        hours.append((events + [(TRANSACTIONS, event) for event in late], len(late)))
    _batches_file().write_bytes(pickle.dumps(hours))
    del simulation
    gc.collect()
    prepare_dagster_home(Settings.from_env())
    prepare_dbt_manifest()
    runner = Runner()
    feature_keys, snapshot_key = runner.feature_keys()
    runner.run(runner.keys("ingestion"), config=SKIP_PROFILES)
    runner.run(runner.keys("transform"))
    whole = {
        "dagster/asset_partition_range_start": start.date().isoformat(),
        "dagster/asset_partition_range_end": FEATURE_PARTITIONS.get_last_partition_key(),
    }
    runner.run(feature_keys, tags=whole)
    runner.run(snapshot_key)
    return {
        "history_events": sum(history.values()),
        "setup_s": round(time.perf_counter() - started, 1),
        "setup_peak_rss_mb": round(peak_rss_mb()),
    }


def time_batch(batch: int, full_snapshot: bool) -> dict[str, Any]:
    """Publish hour ``batch`` (and its late copies), then time the micro-batch's runs."""
    from fraud_platform import names
    from fraud_platform.defs.features.jobs import first_new_event_date, stale_partition_range
    from fraud_platform.defs.ingestion.assets import arrivals_selection
    from fraud_platform.defs.partitions import FEATURE_PARTITIONS
    from fraud_platform.lib.contracts.events import ALL_TOPICS, TRANSACTIONS
    from fraud_platform.lib.kafka.producer import event_messages, produce
    from fraud_platform.settings import Settings
    from fraud_platform.tools.brokers import start_broker
    from fraud_platform.tools.instance import prepare_dagster_home

    prepare_dagster_home(Settings.from_env())  # the set-up's instance
    spec = broker_spec()
    start_broker(spec)  # the set-up's broker, still running: returns at once
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = spec.bootstrap
    events, late = pickle.loads(_batches_file().read_bytes())[batch]
    runner = Runner()
    feature_keys, snapshot_key = runner.feature_keys()
    delivered = produce(spec.bootstrap, event_messages(events))
    new = {topic: delivered.get(topic, 0) for topic in ALL_TOPICS}
    pauses = GcPauses()
    per_layer: dict[str, float] = {}
    clock = time.perf_counter()
    ingested = runner.run(runner.keys("ingestion"), config=SKIP_PROFILES)
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
    dbt_nodes = dbt_node_seconds(silver)
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
    gc_pause_s = pauses.stop()
    row: dict[str, Any] = {
        "new_events": sum(new.values()),
        "late_events": late,
        "bronze_rows_added": sum(
            int(metadata(ingested, table).get("rows_added", 0))
            for table in names.BRONZE_TABLES.values()
        ),
        "stale_partitions": f"{first}..{last}",
        "microbatch_s": round(sum(per_layer.values()), 2),
        "per_layer_s": {k: round(v, 2) for k, v in per_layer.items()},
        "feature_source_events_read": sum(
            metadata(features, k.to_user_string())["source_events_read"] for k in feature_keys
        ),
        "slowest_dbt_nodes_s": dict(list(dbt_nodes.items())[:8]),
        "dbt_nodes_total_s": round(sum(dbt_nodes.values()), 2),
        "dbt_nodes_s": dbt_nodes,
        "feature_groups_s": {
            k.path[-1]: metadata(features, k.to_user_string())["compute_seconds"]
            for k in feature_keys
        },
        "gc_pause_s": round(gc_pause_s, 2),
        # of the groups written ("hosted": read from another group's rows, nothing to write)
        "snapshot_modes": sorted(set(snapshot["modes"].values()) - {"hosted"}),
        "snapshot_rows_read": snapshot["rows_read"],
        "snapshot_entities_written": snapshot["entities_written"],
        "peak_rss_mb": round(peak_rss_mb()),
    }
    if full_snapshot:
        clock = time.perf_counter()
        full = metadata(runner.run(snapshot_key, config={SNAPSHOT: {"full": True}}), SNAPSHOT)
        row["snapshot_full_s"] = round(time.perf_counter() - clock, 2)
        row["snapshot_full_rows_read"] = full["rows_read"]
    return row
