"""Dagster's SQLite storage with pooled connections: the instance ``prepare_dagster_home`` writes
for a local data directory, used by real runs in this process and in another one."""

import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from fraud_platform.settings import Settings
from fraud_platform.tools import dagster_sqlite
from fraud_platform.tools.instance import prepare_dagster_home

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-11")


@dg.asset(partitions_def=DAYS)
def daily_numbers(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"day": context.partition_key})


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("FRAUD_PLATFORM_DAGSTER_PG_URL", raising=False)
    # recorded before prepare_dagster_home sets it, so that teardown restores the original
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    home = prepare_dagster_home(Settings.from_env())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as local:
        yield local


def _materialize(instance: dg.DagsterInstance, day: str) -> dg.ExecuteInProcessResult:
    return dg.materialize([daily_numbers], instance=instance, partition_key=day)


def test_local_instance_keeps_dagsters_sqlite_layout_with_pooled_storages(instance) -> None:
    assert isinstance(instance.run_storage, dagster_sqlite.PooledSqliteRunStorage)
    assert isinstance(instance.event_log_storage, dagster_sqlite.PooledSqliteEventLogStorage)
    result = _materialize(instance, "2026-01-03")
    assert result.success
    home = Path(instance.root_directory)
    assert (home / "history" / "runs.db").is_file()
    assert (home / "history" / "runs" / "index.db").is_file()
    assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()


def test_runs_and_partitions_stored_through_pooled_connections_read_back(instance) -> None:
    days = [f"2026-01-{day:02d}" for day in range(1, 11)]
    run_ids = [_materialize(instance, day).run_id for day in days]
    key = daily_numbers.key
    assert instance.get_materialized_partitions(key) == set(days)
    assert {record.dagster_run.run_id for record in instance.get_run_records()} == set(run_ids)
    latest = instance.get_latest_materialization_event(key)
    assert latest is not None and latest.run_id == run_ids[-1]
    # ten run databases written, at most RUN_ENGINES of them (and the index) kept open
    engines = instance.event_log_storage._engines._engines
    assert len(engines) <= dagster_sqlite.RUN_ENGINES + 1
    assert "index" in engines


def test_another_process_writes_what_this_process_then_reads(instance, tmp_path: Path) -> None:
    _materialize(instance, "2026-01-01")  # this process's pooled connections are open
    script = textwrap.dedent(
        f"""
        import dagster as dg
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_dagster_sqlite import daily_numbers
        with dg.DagsterInstance.get() as instance:
            assert dg.materialize([daily_numbers], instance=instance, partition_key="2026-01-07").success
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert instance.get_materialized_partitions(daily_numbers.key) == {"2026-01-01", "2026-01-07"}
    assert len(instance.get_run_records()) == 2


def test_wipe_closes_the_run_databases_and_runs_go_on(instance) -> None:
    _materialize(instance, "2026-01-02")
    instance.wipe()
    assert instance.get_materialized_partitions(daily_numbers.key) == set()
    assert _materialize(instance, "2026-01-05").success
    assert instance.get_materialized_partitions(daily_numbers.key) == {"2026-01-05"}
