"""The whole asset graph materializes in-process on a small simulation, on real services:
an embedded Kafka-protocol broker, the local Redis, Delta tables, dbt and the model store."""

import io
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
import redis

from fraud_platform.lib.features.catalog import USER_TXN_VELOCITY
from fraud_platform.lib.features.online.reader import OnlineFeatureReader
from fraud_platform.lib.features.registry import FeatureGroup
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.shared import hosts_of
from fraud_platform.lib.features.windows import granule_us, lookup_plan
from fraud_platform.lib.simulation import SimulationConfig, publish, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources.model_store import ModelStoreResource
from fraud_platform.settings import Settings
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from fraud_platform.tools.layers import LAYERS
from fraud_platform.tools.pipeline import load_definitions, prepare_dbt_manifest, run_layers
from tests.asset_keys import LAYER_ASSETS
from tests.integration.conftest import free_port
from tests.redis_server import redis_db_url

pytestmark = pytest.mark.integration
REDIS_DB_URL = redis_db_url(7)  # a database of its own: flushed by this test
DAYS = 16
SMALL_MODEL = {
    "iterations": 120,
    "test_days": 3.0,
    "validation_days": 3.0,
    "gap_days": 0.5,
    "min_auc_roc": 0.0,
    "min_average_precision": 0.0,
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    data_dir = tmp_path_factory.mktemp("platform")
    spec = BrokerSpec("noida", free_port(), data_dir / "noida")
    start_broker(spec)
    env = {
        "FRAUD_PLATFORM_DATA_DIR": str(data_dir),
        "KAFKA_BOOTSTRAP_SERVERS": spec.bootstrap,
        "REDIS_URL": REDIS_DB_URL,
        "DAGSTER_HOME": str(data_dir / "dagster_home"),
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    redis.Redis.from_url(REDIS_DB_URL).flushdb()
    try:
        from fraud_platform.tools.instance import prepare_dagster_home

        settings = Settings.from_env()
        prepare_dagster_home(settings)
        prepare_dbt_manifest()
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=DAYS
        )
        simulation = simulate(SimulationConfig(days=DAYS, users=600, seed=11, start=start))
        from fraud_platform.lib.kafka.admin import ensure_topics

        ensure_topics(spec.bootstrap, ["transactions", "account_events", "labels"])
        published = publish(simulation, spec.bootstrap, until=start + timedelta(days=DAYS))
        instance = dg.DagsterInstance.get()
        defs = load_definitions()
        results = run_layers(
            instance,
            list(LAYERS),
            defs=defs,
            on_progress=lambda _: None,
            log_dir=data_dir / "logs",
            asset_config={
                "models/fraud_catboost": SMALL_MODEL,
                "training/fraud_training_set": {"maturity_days": 3.0},
            },
        )
        yield {
            "settings": settings,
            "simulation": simulation,
            "published": published,
            "instance": instance,
            "defs": defs,
            "results": {r.layer: r for r in results},
            "data_dir": data_dir,
        }
    finally:
        patch.undo()
        stop_broker(spec)
        redis.Redis.from_url(REDIS_DB_URL).flushdb()


def _delta(settings: Settings, table: str) -> pl.DataFrame:
    return pl.read_delta(f"{settings.delta_uri}/{table}")


def test_pipeline_bronze_holds_every_published_event_once(platform: dict) -> None:
    settings = platform["settings"]
    bronze = _delta(settings, "bronze/transactions")
    published_ids = {t["transaction_id"] for t in platform["simulation"].transactions}
    assert bronze.height == platform["published"]["transactions"]
    assert set(bronze["transaction_id"]) == published_ids
    assert bronze["transaction_id"].n_unique() == bronze.height


def test_pipeline_second_ingestion_adds_nothing(platform: dict) -> None:
    settings = platform["settings"]
    before = _delta(settings, "bronze/transactions").height
    again = run_layers(
        platform["instance"], ["ingestion"], defs=platform["defs"], on_progress=lambda _: None
    )
    assert again[0].metadata["bronze/transactions"]["rows_added"] == 0
    assert _delta(settings, "bronze/transactions").height == before


def test_pipeline_every_layer_materialized_and_checks_passed(platform: dict) -> None:
    results = platform["results"]
    assert set(results) == set(LAYERS)
    materialized = {asset for r in results.values() for asset in r.metadata}
    for expected in [*LAYER_ASSETS, "monitoring/training_profile"]:
        assert expected in materialized, expected
    failed = {name for r in results.values() for name, ok in r.checks.items() if not ok}
    assert not failed, failed


def test_pipeline_model_is_registered_with_lineage_and_promoted(platform: dict) -> None:
    settings = platform["settings"]
    meta = platform["results"]["training"].metadata["models/fraud_catboost"]
    delta = DeltaStore(settings.delta_uri)
    store = ModelStoreResource(home=str(settings.bentoml_home), delta=delta)
    assert store.champion("fraud_catboost") == meta["model_tag"]
    info = store.get(meta["model_tag"]).info.metadata
    assert sorted(info["features"]) == sorted(FRAUD_SCORING_V1.model_features)
    assert sorted(info["categorical_features"]) == sorted(FRAUD_SCORING_V1.categorical_features)
    assert info["feature_service"] == FRAUD_SCORING_V1.name  # what the scoring path reads
    assert info["training_set_delta_version"] == meta["training_set_delta_version"]
    assert 0.6 < meta["test_auc_roc"] <= 1.0  # the simulated fraud is learnable


def test_pipeline_online_store_serves_latest_offline_values(platform: dict) -> None:
    from fraud_platform.lib.features.pit import point_in_time_join

    settings = platform["settings"]
    offline = _delta(settings, f"features/{USER_TXN_VELOCITY.versioned_name}")
    latest = (
        offline.sort("feature_time").group_by("entity_key", maintain_order=True).last().head(20)
    )
    reader = OnlineFeatureReader(redis.Redis.from_url(REDIS_DB_URL), FRAUD_SCORING_V1)
    # an hour after each user's last event: the 1-hour windows have emptied, the rest not
    lookups = latest.select("user_id", (pl.col("feature_time") + timedelta(hours=1, seconds=1)))
    lookups = lookups.rename({"feature_time": "event_time"})
    expected = point_in_time_join(
        lookups, [USER_TXN_VELOCITY], {USER_TXN_VELOCITY.versioned_name: offline}
    )
    for row in expected.iter_rows(named=True):
        online = reader.get_online_features(
            {"user_id": row["user_id"], "card_id": "-", "device_id": "-", "country": "-"},
            now=row["event_time"],
        )
        for name in USER_TXN_VELOCITY.feature_names:
            assert online.values[name] == row[name], (row["user_id"], name)
        assert row["user_txn_count_1h"] == 0 and row["user_txn_count_7d"] > 0


def test_pipeline_training_set_records_input_versions(platform: dict) -> None:
    meta = platform["results"]["training"].metadata["training/fraud_training_set"]
    versions = meta["input_delta_versions"]
    assert set(versions) == {g.versioned_name for g in FRAUD_SCORING_V1.groups}
    assert meta["dagster/row_count"] > 1000 and meta["positives"] > 10
    assert Path(platform["data_dir"], "profiles", "training_profile.bin").exists()


def test_pipeline_sensor_skips_when_bronze_is_current_and_fires_on_arrivals(platform: dict) -> None:
    from fraud_platform.defs.resources import build_resources
    from fraud_platform.lib.kafka.producer import event_messages, produce
    from fraud_platform.lib.simulation import SimulationConfig, simulate

    settings = platform["settings"]
    sensor = platform["defs"].get_sensor_def("kafka_arrivals_sensor")
    resources = build_resources(settings)  # the model store nests the Delta resource: a `with`
    with dg.build_sensor_context(instance=platform["instance"], resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)

    extra = simulate(
        SimulationConfig(days=1, users=20, seed=99, start=datetime.now(UTC) - timedelta(days=1))
    )
    events = [("transactions", txn) for txn in extra.transactions[:5]]
    produce(settings.kafka_bootstrap, event_messages(events), flush_timeout_s=10)
    with dg.build_sensor_context(
        instance=platform["instance"], resources=resources, definitions=platform["defs"]
    ) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert '"transactions": 5' in request.tags["arrivals"]
    # only what new transactions can change (and the polled profiles), not the whole job
    selected = {key.to_user_string() for key in request.asset_selection}
    assert {"bronze/transactions", "silver/fct_transactions", "gold/agg_user_daily"} <= selected
    assert {"bronze/labels", "silver/fct_labels", "silver/fct_account_events"}.isdisjoint(selected)
    checks = {key.name for key in request.asset_check_keys}
    assert "unique_fct_transactions_transaction_id" in checks
    assert not any(name.startswith("not_null_") for name in checks)


def test_pipeline_maintenance_job_keeps_every_row(platform: dict) -> None:
    from fraud_platform.lib.ingestion.bronze import committed_offsets

    settings = platform["settings"]
    store = DeltaStore(settings.delta_uri)
    before = _delta(settings, "bronze/transactions").height
    offsets = committed_offsets("transactions", store)
    job = platform["defs"].resolve_job_def("delta_maintenance_job")
    result = job.execute_in_process(instance=platform["instance"])
    assert result.success
    assert _delta(settings, "bronze/transactions").height == before
    assert committed_offsets("transactions", store) == offsets


REPLAY_REDIS_URL = redis_db_url(8)  # flushed before every replayed instant
REPLAY_INSTANTS = 40
REPLAY_TXNS_PER_INSTANT = 25


def _shift_times(frame: pl.DataFrame, shift: timedelta) -> pl.DataFrame:
    return frame.with_columns(
        [pl.col(name) + shift for name, dtype in frame.schema.items() if dtype == pl.Datetime]
    )


def _shift_profiles(group: FeatureGroup, rows: pl.DataFrame, shift: timedelta) -> pl.DataFrame:
    """The rows' window profiles moved by ``shift`` too: they number granules from the epoch."""
    shift_us = shift // timedelta(microseconds=1)
    return rows.with_columns(
        pl.col(p.granules) + shift_us // granule_us(p.window) for p in lookup_plan(group).profiles
    )


def test_pipeline_replay_online_equals_point_in_time_at_many_instants(platform: dict) -> None:
    """At random instants t: refresh the online store from the silver events before t (what a
    refresh at t would write) and score the next transactions through the online path; the
    pipeline's offline tables joined point in time at t give every feature identically.

    Redis expires keys on the wall clock, so the whole history is moved forward by whole weeks
    (hour-of-day features unchanged) until every instant lies in the future: a multiple of
    every window's granule (2.8 h for 7 days), which the rows' window profiles number.
    """
    from fraud_platform.defs.features.assets import feature_table
    from fraud_platform.lib.features.compute import compute_feature_group
    from fraud_platform.lib.features.online.history import online_history
    from fraud_platform.lib.features.online.writer import write_snapshot
    from fraud_platform.lib.features.pit import point_in_time_join
    from fraud_platform.lib.features.request import model_row
    from fraud_platform.resources import WarehouseResource

    settings = platform["settings"]
    service = FRAUD_SCORING_V1
    shift = timedelta(weeks=-(-(DAYS + 2) // 7))
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    sources = {
        name: _shift_times(warehouse.table(name), shift)
        for name in {g.source for g in service.groups}
    }
    offline = {
        g.versioned_name: _shift_profiles(
            g, _shift_times(_delta(settings, feature_table(g)), shift), shift
        )
        for g in service.groups
    }
    transactions = sources["fct_transactions"].sort("event_time")
    first_index = transactions["event_time"].search_sorted(
        transactions["event_time"].max() - timedelta(days=8)
    )
    client = redis.Redis.from_url(REPLAY_REDIS_URL)
    reader = OnlineFeatureReader(client, service)
    rng = random.Random(5)
    compared = 0
    try:
        for _ in range(REPLAY_INSTANTS):
            # just before (or exactly at: equal timestamps must stay invisible) a transaction
            index = rng.randrange(first_index, transactions.height - REPLAY_TXNS_PER_INSTANT)
            t = transactions["event_time"][index] - timedelta(seconds=rng.choice([0, 1, 97, 3600]))
            client.flushdb()
            for group in hosts_of(service.groups):  # version 1 is read from version 2's rows
                seen = sources[group.source].filter(pl.col(group.event_time_column) < t)
                write_snapshot(
                    client, group, online_history(group, compute_feature_group(group, seen))
                )
            upcoming = transactions.filter(pl.col("event_time") >= t).head(REPLAY_TXNS_PER_INSTANT)
            at_t = upcoming.with_columns(
                pl.lit(t).cast(upcoming["event_time"].dtype).alias("event_time")
            )
            pit_rows = point_in_time_join(at_t, service.groups, offline).iter_rows(named=True)
            for txn, pit in zip(at_t.iter_rows(named=True), pit_rows, strict=True):
                online = reader.get_online_features(txn, now=t)
                served = model_row(txn, online.values, service)
                trained = model_row(pit, pit, service)
                assert served == trained, (t, txn["transaction_id"])
                for group in service.groups:
                    for name in group.feature_names:
                        assert online.values[name] == pit[name], (t, txn["transaction_id"], name)
                compared += 1
    finally:
        client.flushdb()
    assert compared == REPLAY_INSTANTS * REPLAY_TXNS_PER_INSTANT


def _partition_files(settings: Settings, table: str) -> dict[str, set[str]]:
    from deltalake import DeltaTable

    actions = pl.DataFrame(
        DeltaTable(f"{settings.delta_uri}/{table}").get_add_actions(flatten=True)
    )
    files: dict[str, set[str]] = {}
    for path, day in zip(actions["path"], actions["partition.feature_date"], strict=True):
        files.setdefault(str(day), set()).add(path)
    return files


def test_pipeline_late_event_recomputes_exactly_the_stale_partitions(platform: dict) -> None:
    """A transaction arriving 5 days late lands in its own bronze date partition; after the
    ingestion run the sensor asks for feature partitions from its date to today, and the
    recomputed table equals a full recomputation while older partitions keep their files."""
    from fraud_platform.defs.features.assets import feature_table
    from fraud_platform.lib.contracts.events import SCHEMA_VERSION
    from fraud_platform.lib.features.catalog import FEATURE_GROUPS
    from fraud_platform.lib.features.compute import compute_feature_group
    from fraud_platform.lib.kafka.producer import event_messages, produce
    from fraud_platform.resources import WarehouseResource

    settings, instance, defs = platform["settings"], platform["instance"], platform["defs"]
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    latest = warehouse.query(
        "select * from silver.fct_transactions order by event_time desc limit 1"
    ).row(0, named=True)
    late_time = latest["event_time"].replace(hour=12, minute=0, second=0) - timedelta(days=5)
    late = {
        **{k: latest[k] for k in ("user_id", "card_id", "merchant_id", "merchant_category")},
        **{k: latest[k] for k in ("currency", "device_id", "ip", "country", "amount")},
        "schema_version": SCHEMA_VERSION,
        "transaction_id": "late-0001",
        "event_time": late_time,
        "channel": "ecommerce",
        "counterparty_id": None,
    }
    late_day = late_time.date().isoformat()
    table = feature_table(USER_TXN_VELOCITY)
    before = _partition_files(settings, table)

    produce(settings.kafka_bootstrap, event_messages([("transactions", late)]), flush_timeout_s=10)
    ingest = defs.resolve_job_def("ingest_job").execute_in_process(instance=instance)
    assert ingest.success
    bronze = pl.read_delta(f"{settings.delta_uri}/bronze/transactions")
    assert bronze.filter(pl.col("transaction_id") == "late-0001")["_event_date"].to_list() == [
        late_time.date()
    ]

    sensor = defs.get_sensor_def("stale_feature_partitions_sensor")
    success = instance.get_records_for_run(
        ingest.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS
    ).records[0]
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_instance=instance,
        dagster_run=ingest.dagster_run,
        dagster_event=success.event_log_entry.dagster_event,
    )
    request = sensor(context)
    assert isinstance(request, dg.RunRequest)
    start = request.tags["dagster/asset_partition_range_start"]
    end = request.tags["dagster/asset_partition_range_end"]
    assert start == late_day
    refresh = defs.resolve_job_def("feature_refresh_job").execute_in_process(
        instance=instance, tags=request.tags
    )
    assert refresh.success

    after = _partition_files(settings, table)
    for day, files in before.items():
        if day < late_day:
            assert after[day] == files, f"partition {day} was rewritten"
        elif day <= end:
            assert not (after.get(day, set()) & files), f"partition {day} was not recomputed"
    silver = {name: warehouse.table(name) for name in {g.source for g in FEATURE_GROUPS}}
    for group in FEATURE_GROUPS:
        stored = _delta(settings, feature_table(group)).drop("feature_date")
        expected = compute_feature_group(group, silver[group.source])
        order = ["feature_time", "entity_key"]
        assert stored.sort(order).equals(expected.sort(order)), group.versioned_name


def _dbt_replay(settings: Settings, workdir: Path, replay_to: str | None = None) -> Path:
    """``dbt build`` from the platform's bronze Delta tables into a fresh warehouse file."""
    import subprocess

    from fraud_platform.defs.transform.project import DBT_PROJECT_DIR, dbt_executable

    warehouse = workdir / "warehouse.duckdb"
    command = [dbt_executable(), "build", "--project-dir", str(DBT_PROJECT_DIR)]
    command += ["--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(workdir / "target")]
    command += ["--log-path", str(workdir / "logs")]
    if replay_to:
        command += ["--vars", f"{{replay_to: '{replay_to}'}}"]
    env = {
        **os.environ,
        "FRAUD_PLATFORM_WAREHOUSE": str(warehouse),
        "FRAUD_PLATFORM_DELTA_ROOT_LOCAL": settings.delta_uri,
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    return warehouse


def _table_bytes(warehouse: Path, table: str, where: str = "true") -> bytes:
    """The table's rows in a canonical order, serialised (Arrow IPC, uncompressed)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        frame = con.sql(f"select * from {table} where {where} order by all").pl()
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compression="uncompressed")
    return buffer.getvalue()


SILVER_AND_GOLD = (
    "silver.fct_transactions",
    "silver.fct_account_events",
    "silver.fct_labels",
    "silver.fct_merchant_fraud_labels",
    "silver.dim_users",
    "gold.agg_user_daily",
    "gold.agg_merchant_daily",
)
# tables whose rows belong to one event date and depend only on earlier events
EVENT_DATED = {
    "silver.fct_transactions": "event_date",
    "silver.fct_account_events": "cast(event_time as date)",
    "gold.agg_user_daily": "event_date",
}


def test_pipeline_replay_from_bronze_rebuilds_silver_and_gold_byte_for_byte(
    platform: dict, tmp_path: Path
) -> None:
    settings = platform["settings"]
    live = settings.warehouse_path
    full = _dbt_replay(settings, tmp_path / "full")
    for table in SILVER_AND_GOLD:
        assert _table_bytes(full, table) == _table_bytes(live, table), table
    # replaying bronze up to a date reproduces every row of the dates up to it
    with duckdb.connect(str(live), read_only=True) as con:
        first, last = con.execute(
            "select min(event_date), max(event_date) from silver.fct_transactions"
        ).fetchone()
    cut = (first + (last - first) // 2).isoformat()
    partial = _dbt_replay(settings, tmp_path / "partial", replay_to=cut)
    for table, day in EVENT_DATED.items():
        where = f"{day} <= date '{cut}'"
        replayed = _table_bytes(partial, table, where)
        assert replayed == _table_bytes(live, table, where), table
        with duckdb.connect(str(partial), read_only=True) as con:
            later = con.execute(
                f"select count(*) from {table} where {day} > date '{cut}'"
            ).fetchone()
        assert later == (0,), table  # nothing after the replay date was rebuilt


def test_pipeline_new_feature_backfills_over_history_without_touching_other_groups(
    platform: dict,
) -> None:
    """A new version of a group with one more feature (user_txn_velocity_v2, declared in the
    catalog beside v1) is an asset of the definitions, materialized over every partition of
    history; the other groups' tables are not written, and the online store serves the new
    version beside the old one: fraud_scoring_v2 reads v2, fraud_scoring_v1 still reads v1."""
    import shutil

    from fraud_platform.defs.features.assets import feature_table, history_partition_range
    from fraud_platform.defs.resources import build_resources
    from fraud_platform.lib.features.catalog import FEATURE_GROUPS, USER_TXN_VELOCITY_V2
    from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
    from fraud_platform.lib.features.online.writer import write_snapshot
    from fraud_platform.lib.features.services import FRAUD_SCORING_V2
    from fraud_platform.resources import WarehouseResource

    settings, instance = platform["settings"], platform["instance"]
    v2 = USER_TXN_VELOCITY_V2
    others = [g for g in FEATURE_GROUPS if g is not v2]
    delta = DeltaStore(settings.delta_uri)
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    shutil.rmtree(delta.uri(feature_table(v2)))  # as if v2 had just been added to the catalog
    before = {g.versioned_name: delta.version(feature_table(g)) for g in others}
    first, last = history_partition_range(warehouse)
    assets = [platform["defs"].get_assets_def(dg.AssetKey(["features", v2.versioned_name]))]
    result = dg.materialize(
        assets,
        resources=build_resources(settings),
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        selection=[dg.AssetKey(["features", v2.versioned_name])],
    )
    assert result.success
    partitions = {
        e.step_materialization_data.materialization.partition
        for e in result.get_asset_materialization_events()
    }
    assert min(partitions) == first and max(partitions) == last
    assert {g.versioned_name: delta.version(feature_table(g)) for g in others} == before

    stored = delta.read(feature_table(v2)).drop("feature_date")
    expected = compute_feature_group(v2, warehouse.table("fct_transactions"))
    order = ["feature_time", "entity_key"]
    assert stored.sort(order).equals(expected.sort(order))
    assert stored["user_amount_min_7d"].null_count() < stored.height

    client = redis.Redis.from_url(REDIS_DB_URL)
    latest = latest_per_entity(stored).sort("feature_time").tail(1).row(0, named=True)
    write_snapshot(
        client, v2, latest_per_entity(stored).filter(pl.col("entity_key") == latest["entity_key"])
    )
    now = latest["feature_time"] + timedelta(seconds=1)
    entities = {"user_id": latest["user_id"]}
    online = OnlineFeatureReader(client, FRAUD_SCORING_V2).get_online_features(entities, now=now)
    assert online.values["user_amount_min_7d"] == latest["user_amount_min_7d"]
    served_v1 = OnlineFeatureReader(client, FRAUD_SCORING_V1).get_online_features(entities, now=now)
    assert served_v1.feature_times[USER_TXN_VELOCITY.versioned_name] is not None  # v1 still served
