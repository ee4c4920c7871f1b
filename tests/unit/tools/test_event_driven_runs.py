"""The sensor-driven path is cheap to launch: in-process jobs, a queue with one run at a time per
kind, no pile-up of runs that have not started, and no ``dbt parse`` per run worker."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_dbt import DbtProject
from dbt.version import __version__ as dbt_version
from packaging.version import Version

from fraud_platform import names
from fraud_platform.defs.ingestion.assets import arrivals_selection, waiting_run
from fraud_platform.defs.transform.project import (
    dbt_executable,
    dbt_project,
    manifest_is_stale,
    remove_run_target,
)
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.resources.dbt import DbtResource
from fraud_platform.settings import Settings
from fraud_platform.tools.instance import MAX_CONCURRENT_RUNS, prepare_dagster_home
from fraud_platform.tools.pipeline import load_definitions, prepare_dbt_manifest

EVENT_DRIVEN_JOBS = (names.INGEST_JOB, names.DECISION_LOG_JOB, names.FEATURE_REFRESH_JOB)


def test_event_driven_jobs_run_in_process_and_carry_their_queue_tag() -> None:
    prepare_dbt_manifest()
    defs = load_definitions()
    for name in EVENT_DRIVEN_JOBS:
        job = defs.resolve_job_def(name)
        assert job.executor_def.name == dg.in_process_executor.name, name
        assert job.tags[names.RUN_QUEUE_TAG] == name


def test_feature_checks_run_in_the_assets_own_step() -> None:
    prepare_dbt_manifest()
    graph = load_definitions().resolve_asset_graph()
    for group in FEATURE_GROUPS:
        key = dg.AssetKey(["features", group.versioned_name])
        check = dg.AssetCheckKey(key, f"{group.name}_has_no_null_keys")
        assert check in graph.get(key).assets_def.check_keys, check  # the asset's op yields it


def test_instance_queues_runs_one_at_a_time_per_queue_tag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FRAUD_PLATFORM_DAGSTER_PG_URL", raising=False)
    home = prepare_dagster_home(Settings.from_env())
    with dg.DagsterInstance.from_config(str(home)) as instance:
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        assert coordinator.dequeue_interval_seconds == 1
        limits = coordinator.get_run_queue_config()
        assert limits.max_concurrent_runs == MAX_CONCURRENT_RUNS
        assert {
            "key": names.RUN_QUEUE_TAG,
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        } in limits.tag_concurrency_limits


@dg.op
def _noop() -> None:
    pass


@dg.job(name=names.INGEST_JOB)
def _ingest_stand_in() -> None:
    _noop()


def test_waiting_run_is_a_queued_or_starting_run_of_the_job() -> None:
    job = _ingest_stand_in
    with dg.DagsterInstance.ephemeral() as instance:
        instance.create_run_for_job(job, status=dg.DagsterRunStatus.SUCCESS)
        assert waiting_run(instance, names.INGEST_JOB) is None
        # (a QUEUED run needs a code location's origin; STARTING is the same rule)
        starting = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTING)
        assert waiting_run(instance, names.INGEST_JOB) == starting.run_id
        assert waiting_run(instance, names.DECISION_LOG_JOB) is None


def test_manifest_is_stale_only_when_a_project_file_is_newer(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\n")
    (tmp_path / "models").mkdir()
    model = tmp_path / "models" / "m.sql"
    model.write_text("select 1 as x\n")
    project = DbtProject(project_dir=tmp_path)
    assert manifest_is_stale(project)  # no manifest yet
    (tmp_path / "target").mkdir()
    project.manifest_path.write_text("{}")
    past = time.time() - 60
    os.utime(model, (past, past))
    os.utime(tmp_path / "dbt_project.yml", (past, past))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "dbt.log").write_text("written by dbt after the manifest")
    (tmp_path / "target" / "fraud_dbt_models-1234567-abc" / "compiled").mkdir(parents=True)
    (tmp_path / "target" / "fraud_dbt_models-1234567-abc" / "compiled" / "m.sql").write_text("")
    assert not manifest_is_stale(project)
    model.write_text("select 2 as x\n")  # edited after the last parse
    assert manifest_is_stale(project)


def test_arrivals_selection_is_the_topics_bronze_and_what_the_job_builds_from_it() -> None:
    prepare_dbt_manifest()
    defs = load_definitions()
    repository = defs.get_repository_def()
    job_assets = defs.resolve_job_def(names.INGEST_JOB).asset_layer.selected_asset_keys

    def selected(*topics: str) -> set[str]:
        keys, checks = arrivals_selection(repository, topics)
        assert set(keys) <= job_assets
        assert {check.asset_key for check in checks} <= set(keys)
        return {key.to_user_string() for key in keys}

    transactions = selected("transactions")
    assert {
        "bronze/transactions",
        "bronze/account_profiles",  # polled on every ingestion
        "staging/stg_bronze__transactions",
        "silver/fct_transactions",
        "gold/agg_user_daily",
        "gold/agg_merchant_daily",
    } <= transactions
    quiet = {
        "bronze/labels",
        "silver/fct_labels",
        "bronze/account_events",
        "silver/fct_account_events",
    }
    assert transactions.isdisjoint(quiet)
    labels = selected("labels")
    assert {"bronze/labels", "silver/fct_labels", "gold/agg_merchant_daily"} <= labels
    assert "silver/fct_transactions" not in labels
    everything = {key.to_user_string() for key in job_assets}
    assert selected("transactions", "account_events", "labels") == everything


def test_dbt_resource_knows_the_local_dbt_version_without_running_it() -> None:
    resource = DbtResource(project_dir=dbt_project, dbt_executable=dbt_executable())
    assert resource._cli_version == Version(dbt_version)  # what dbt --version says
    assert resource._initialize_dbt_core_adapter(["build"]) is None
    out = subprocess.run(
        [dbt_executable(), "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert f"installed: {dbt_version}" in out, out


def test_arrivals_selection_leaves_out_contract_and_intermediate_view_tests() -> None:
    prepare_dbt_manifest()
    repository = load_definitions().get_repository_def()
    graph = repository.asset_graph
    assets, checks = arrivals_selection(repository, ["transactions"])
    every_check = graph.get_check_keys_for_assets(set(assets))
    left_out = {key.name for key in every_check - set(checks)}
    intermediate = ("unique_int_", "not_null_int_")
    assert left_out and all(
        name.startswith(("not_null_", "accepted_values_", *intermediate)) for name in left_out
    )
    assert "unique_int_user_home_countries_daily_user_id_event_date" in left_out
    kept = {key.name for key in checks}
    assert "unique_fct_transactions_transaction_id" in kept
    assert "unique_stg_bronze__transactions_kafka_partition_kafka_offset" in kept  # exactly once
    assert "transactions_rejection_rate_below_threshold" in kept
    assert any(name.startswith("relationships_") for name in kept)
    for key in every_check - set(checks):
        assert graph.get_check_spec(key).metadata[names.SKIPPED_ON_ARRIVAL] is True


def test_remove_run_target_deletes_a_dbt_runs_folder_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: demo\nprofile: demo\n")
    project = DbtProject(project_dir=tmp_path)
    run = tmp_path / "target" / "fraud_dbt_models-1234567-abc"
    (run / "compiled").mkdir(parents=True)
    (run / "run_results.json").write_text("{}")
    remove_run_target(run, project)
    assert not run.exists() and (tmp_path / "target").is_dir()
    with pytest.raises(ValueError, match="not a dbt run's folder"):
        remove_run_target(tmp_path / "models", project)
    with pytest.raises(ValueError, match="not a dbt run's folder"):
        remove_run_target(tmp_path / "target", project)


def test_arrival_runs_test_rows_ingested_after_the_oldest_stamped_table(tmp_path):
    """The first arrival run on a new platform has no warehouse file yet: it tests everything
    (it raised "database does not exist" and failed the first ingest run of the sensor path)."""
    import duckdb

    from fraud_platform.defs.transform.assets import (
        STAMPED_TABLES,
        tests_ingested_after_by_table,
    )
    from fraud_platform.resources import WarehouseResource

    path = tmp_path / "warehouse.duckdb"
    warehouse = WarehouseResource(path=str(path))
    assert tests_ingested_after_by_table(warehouse) is None
    newest = {"fct_transactions": "03:00", "fct_account_events": "02:00", "fct_labels": "04:00"}
    with duckdb.connect(str(path)) as db:
        db.sql("create schema silver")
        for table in STAMPED_TABLES[:-1]:
            db.sql(
                f"create table silver.{table} as select timestamptz '2026-03-01 "
                f"{newest[table]}:00+00' as ingested_at"
            )
    assert tests_ingested_after_by_table(warehouse) is None  # fct_labels missing: a first build
    with duckdb.connect(str(path)) as db:
        last = STAMPED_TABLES[-1]
        db.sql(
            f"create table silver.{last} as select timestamptz '2026-03-01 "
            f"{newest[last]}:00+00' as ingested_at"
        )
    by_table = tests_ingested_after_by_table(warehouse)
    assert by_table is not None
    assert min(by_table.values()).startswith("2026-03-01 02:00:00")  # the shared instant
    assert {table: by_table[table][:16] for table in by_table} == {
        table: f"2026-03-01 {hour}" for table, hour in newest.items()
    }
