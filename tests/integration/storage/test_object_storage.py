"""Every Delta table on an S3-protocol server (moto's server mode on a free port): ingestion ->
dbt -> features -> training run in-process against it, through a real broker, the local Redis
and dbt. The DuckDB warehouse dbt builds silver and gold into stays a local file (DuckDB cannot
write to object storage without its httpfs extension, which cannot be downloaded here); bronze
is read by dbt from the bucket."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import redis

from fraud_platform.lib.simulation import SimulationConfig, publish, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.settings import Settings
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from fraud_platform.tools.pipeline import load_definitions, prepare_dbt_manifest, run_layers
from tests.integration.conftest import free_port
from tests.integration.storage.moto_s3 import S3Server, moto_s3
from tests.redis_server import redis_db_url

pytestmark = pytest.mark.integration
# a database no other test or benchmark uses; the online snapshot's keys ("fp:*") are deleted
# before and after (no FLUSHDB on the shared server)
REDIS_DB_URL = redis_db_url(10)
DAYS = 12
ROOT = "s3://lake/delta"
SMALL_MODEL = {
    "iterations": 40,
    "test_days": 2.0,
    "validation_days": 2.0,
    "gap_days": 0.5,
    "min_auc_roc": 0.0,
    "min_average_precision": 0.0,
}
# written by the layers run here; each must be a Delta table in the bucket
EXPECTED_TABLES = [
    "bronze/transactions",
    "bronze/account_events",
    "bronze/labels",
    "bronze/account_profiles",
    "registry/model_events",
]


def _delete_online_keys() -> None:
    client = redis.Redis.from_url(REDIS_DB_URL)
    for batch in _batches(client.scan_iter(match="fp:*", count=1000), 1000):
        client.delete(*batch)


def _batches(keys: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for key in keys:
        batch.append(key)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("objstore")
    saved_environ = dict(os.environ)  # the dbt asset exports its settings into os.environ
    with moto_s3(data_dir / "moto.log") as s3:
        spec = BrokerSpec("noida", free_port(), data_dir / "noida")
        start_broker(spec)
        env = {
            "FRAUD_PLATFORM_DATA_DIR": str(data_dir),
            "KAFKA_BOOTSTRAP_SERVERS": spec.bootstrap,
            "REDIS_URL": REDIS_DB_URL,
            "DAGSTER_HOME": str(data_dir / "dagster_home"),
            "FRAUD_PLATFORM_DELTA_ROOT": ROOT,
            **{
                f"FRAUD_PLATFORM_DELTA_OPT_{key.upper()}": value
                for key, value in s3.storage_options().items()
            },
        }
        os.environ.update(env)
        _delete_online_keys()
        try:
            from fraud_platform.tools.instance import prepare_dagster_home

            settings = Settings.from_env()
            prepare_dagster_home(settings)
            prepare_dbt_manifest()
            start = datetime.now(UTC).replace(
                hour=0, minute=0, second=0, microsecond=0
            ) - timedelta(days=DAYS)
            simulation = simulate(SimulationConfig(days=DAYS, users=300, seed=5, start=start))
            from fraud_platform.lib.kafka.admin import ensure_topics

            ensure_topics(spec.bootstrap, ["transactions", "account_events", "labels"])
            published = publish(simulation, spec.bootstrap, until=start + timedelta(days=DAYS))
            results = run_layers(
                dg.DagsterInstance.get(),
                ["ingestion", "transform", "features", "training"],
                defs=load_definitions(),
                on_progress=lambda line: print(datetime.now(UTC).isoformat(), line),
                log_dir=data_dir / "logs",
                asset_config={
                    "models/fraud_catboost": SMALL_MODEL,
                    "training/fraud_training_set": {"maturity_days": 3.0},
                },
            )
            print({r.layer: round(r.seconds, 1) for r in results})
            yield {
                "s3": s3,
                "settings": settings,
                "published": published,
                "results": {r.layer: r for r in results},
                "data_dir": data_dir,
            }
        finally:
            os.environ.clear()
            os.environ.update(saved_environ)
            stop_broker(spec)
            _delete_online_keys()


def _store(s3: S3Server) -> DeltaStore:
    return DeltaStore(ROOT, s3.storage_options())


def test_every_layer_ran_on_the_bucket(lake: dict) -> None:
    assert lake["settings"].delta_uri == ROOT
    assert set(lake["results"]) == {"ingestion", "transform", "features", "training"}
    failed = {name for r in lake["results"].values() for name, ok in r.checks.items() if not ok}
    assert not failed, failed


def test_tables_are_delta_tables_in_the_bucket(lake: dict) -> None:
    s3: S3Server = lake["s3"]
    keys = s3.keys("delta/")
    logs = {
        key.split("/_delta_log/")[0].removeprefix("delta/") for key in keys if "/_delta_log/" in key
    }
    for table in EXPECTED_TABLES:
        assert table in logs, (table, sorted(logs))
    feature_tables = {table for table in logs if table.startswith("features/")}
    assert feature_tables, sorted(logs)
    assert any(key.endswith(".parquet") for key in keys)


def test_bronze_in_the_bucket_holds_every_published_event(lake: dict) -> None:
    bronze = _store(lake["s3"]).read("bronze/transactions")
    assert bronze.height == lake["published"]["transactions"]
    assert bronze["transaction_id"].n_unique() == bronze.height


def test_dbt_read_bronze_from_the_bucket(lake: dict) -> None:
    """silver was built from the bronze in the bucket (there is no other copy of it)."""
    import duckdb

    with duckdb.connect(str(lake["settings"].warehouse_path), read_only=True) as connection:
        rows = connection.sql(
            "select count(distinct transaction_id) from silver.fct_transactions"
        ).fetchall()
    silver = rows[0][0]
    bronze = _store(lake["s3"]).read("bronze/transactions")
    assert silver == bronze["transaction_id"].n_unique()


def test_the_model_was_registered_in_the_bucket(lake: dict) -> None:
    events = _store(lake["s3"]).read("registry/model_events")
    tag = lake["results"]["training"].metadata["models/fraud_catboost"]["model_tag"]
    assert tag in set(events["tag"])


def test_nothing_of_the_tables_was_written_to_local_disk(lake: dict) -> None:
    data_dir: Path = lake["data_dir"]
    assert not (data_dir / "delta").exists()
    local_logs = [p for p in data_dir.rglob("_delta_log")]
    assert local_logs == []
    local_parquet = [p for p in data_dir.rglob("*.parquet")]
    assert local_parquet == []
