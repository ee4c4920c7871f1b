"""Runs never succeed with the data left behind: a failed blocking check or step makes
``materialize`` exit 1, events outside the feature partitions are an error naming the range,
an unreachable PostgreSQL skips the profiles source, ``topics create`` makes the platform's
topics, and ``import`` works end to end from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import typer
from confluent_kafka.admin import AdminClient, ConfigResource
from typer.testing import CliRunner

from fraud_platform import names
from fraud_platform.defs.partitions import EventsOutsidePartitions, check_within_partitions
from fraud_platform.lib.kafka.admin import admin_config
from fraud_platform.settings import Settings, SettingsError
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from fraud_platform.tools.cli import app
from fraud_platform.tools.cli_import import create_topics
from fraud_platform.tools.cli_materialize import finish_materialize, profiles_source_config
from fraud_platform.tools.pipeline import run_layers
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------------------------
# materialize: exit codes


def _gated_defs(step_fails: bool = False) -> dg.Definitions:
    @dg.asset(group_name="training")
    def candidate() -> int:
        if step_fails:
            raise ValueError("the step broke")
        return 1

    @dg.asset_check(asset=candidate, blocking=True)
    def candidate_is_good_enough() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=False, metadata={"auc": 0.5})

    @dg.asset(group_name="training", deps=[candidate])
    def promoted() -> int:
        return 2

    return dg.Definitions(assets=[candidate, promoted], asset_checks=[candidate_is_good_enough])


def test_a_failed_blocking_check_makes_materialize_exit_1() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        results = run_layers(instance, ["training"], defs=_gated_defs(), on_progress=print)
    assert results[0].blocked == ["candidate:candidate_is_good_enough"]
    assert "promoted" not in results[0].metadata  # the gate held it back
    with pytest.raises(typer.Exit) as exited:
        finish_materialize(lambda: results)
    assert exited.value.exit_code == 1


def test_a_failed_step_makes_materialize_exit_1() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(typer.Exit) as exited:
            finish_materialize(
                lambda: run_layers(instance, ["training"], defs=_gated_defs(step_fails=True))
            )
    assert exited.value.exit_code == 1


# --------------------------------------------------------------------------------------------
# partitions


def test_events_before_the_partitions_are_an_error_naming_both_ranges() -> None:
    with pytest.raises(EventsOutsidePartitions) as raised:
        check_within_partitions(date(2023, 4, 1), date(2023, 9, 28))
    message = str(raised.value)
    assert "events from 2023-04-01 to 2023-09-28" in message
    assert "feature partitions 2024-01-01" in message
    assert "FRAUD_PLATFORM_PARTITIONS_START=2023-04-01" in message
    check_within_partitions(date(2024, 1, 1), date(2024, 2, 1))  # inside: no error


def test_partition_start_comes_from_the_environment() -> None:
    assert Settings.from_env({}).partitions_start == date(2024, 1, 1)
    settings = Settings.from_env({"FRAUD_PLATFORM_PARTITIONS_START": "2019-06-01"})
    assert settings.partitions_start == date(2019, 6, 1)
    with pytest.raises(SettingsError, match="FRAUD_PLATFORM_PARTITIONS_START"):
        Settings.from_env({"FRAUD_PLATFORM_PARTITIONS_START": "June"})
    first = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fraud_platform.defs.partitions import FEATURE_PARTITIONS as P; "
            "print(P.get_first_partition_key())",
        ],
        env={"FRAUD_PLATFORM_PARTITIONS_START": "2019-06-01", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    assert first.stdout.strip() == "2019-06-01"


# --------------------------------------------------------------------------------------------
# PostgreSQL source


def test_unreachable_postgres_skips_the_profiles_source(capsys: pytest.CaptureFixture) -> None:
    down = Settings(profiles_pg_url=f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    config = profiles_source_config(down, ["ingestion"], {})
    assert config == {names.PROFILES_TABLE: {"when_unreachable": "skip"}}
    assert "skipping the account profiles source" in capsys.readouterr().out
    # Reachable (the machine's PostgreSQL), another layer, or the caller's own choice: unchanged.
    up = Settings(profiles_pg_url="postgresql://postgres@127.0.0.1:5432/postgres")
    assert profiles_source_config(up, ["ingestion"], {}) == {}
    assert profiles_source_config(down, ["training"], {}) == {}
    own = {names.PROFILES_TABLE: {"when_unreachable": "fail"}}
    assert profiles_source_config(down, ["ingestion"], own) == own


# --------------------------------------------------------------------------------------------
# topics create


def test_topics_create_makes_the_platform_topics_with_partitions_and_retention(
    tmp_path: Path,
) -> None:
    spec = BrokerSpec("noida", free_port(), tmp_path / "broker")
    start_broker(spec)
    try:
        created = create_topics(Settings(kafka_bootstrap_servers=spec.bootstrap))
        assert created == {"transactions": 3, "account_events": 3, "labels": 3, "scores": 3}
        admin = AdminClient(admin_config(spec.bootstrap))
        resource = ConfigResource(ConfigResource.Type.TOPIC, "transactions")
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        assert configs["retention.ms"].value == str(14 * 24 * 3600 * 1000)
    finally:
        stop_broker(spec, grace_s=5)


# --------------------------------------------------------------------------------------------
# import from the command line


def test_cli_import_twice_adds_nothing_the_second_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    pl.DataFrame(
        {
            "TRANSACTION_ID": [1, 2, 3],
            "TX_DATETIME": [
                datetime(2023, 5, 1, 10),
                datetime(2023, 5, 2, 11),
                datetime(2023, 5, 3),
            ],
            "CUSTOMER_ID": [7, 7, 8],
            "TERMINAL_ID": [70, 71, 70],
            "TX_AMOUNT": [10.0, 0.0, 30.0],
        }
    ).write_parquet(tmp_path / "h.parquet")
    args = [
        "import", "transactions", str(tmp_path / "h.parquet"),
        "--map", "transaction_id=TRANSACTION_ID", "--map", "event_time=TX_DATETIME",
        "--map", "card_id=CUSTOMER_ID", "--map", "merchant_id=TERMINAL_ID",
        "--map", "amount=TX_AMOUNT", "--default", "currency=EUR",
    ]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.output.strip().splitlines()[-1])
    assert (summary["accepted"], summary["dead_letters"], summary["rows"]) == (2, 1, 3)
    assert "before the first feature partition 2024-01-01" in first.output
    second = runner.invoke(app, args)
    again = json.loads(second.output.strip().splitlines()[-1])
    assert (again["accepted"], again["dead_letters"], again["already_imported"]) == (0, 0, 3)
    bad = runner.invoke(app, [*args[:3], "--map", "amount=NOPE"])
    assert bad.exit_code == 2 and "not in the file" in bad.output


def test_cli_import_publish_produces_rows_kafka_ingestion_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fraud_platform.lib.ingestion.bronze import ingest_topic
    from fraud_platform.lib.storage.delta import DeltaStore

    spec = BrokerSpec("noida", free_port(), tmp_path / "broker")
    start_broker(spec)
    try:
        monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", spec.bootstrap)
        (tmp_path / "labels.csv").write_text(
            "tx,when,fraud\nt1,2025-04-08T00:00:00Z,1\nt2,2025-04-09T00:00:00Z,0\n"
            "t3,2025-04-09T00:00:00Z,maybe\n"
        )
        args = ["import", "labels", str(tmp_path / "labels.csv"), "--publish",
                "--map", "transaction_id=tx", "--map", "label_time=when", "--map", "is_fraud=fraud"]  # fmt: skip
        published = CliRunner().invoke(app, args)
        assert published.exit_code == 0, published.output
        assert json.loads(published.output.strip().splitlines()[-1])["published"] == 3
        result = ingest_topic(
            "labels", bootstrap=spec.bootstrap, store=DeltaStore(str(tmp_path / "d"))
        )
        assert (result.accepted, result.rejected) == (2, 1)  # "maybe" is no boolean
        rows = DeltaStore(str(tmp_path / "d")).read("bronze/labels").sort("transaction_id")
        assert rows["is_fraud"].to_list() == [True, False]
    finally:
        stop_broker(spec, grace_s=5)
