"""The one Definitions object loads (no services needed) and holds the whole graph."""

import dagster as dg

from fraud_platform.tools.layers import LAYERS
from fraud_platform.tools.pipeline import load_definitions, prepare_dbt_manifest
from tests.asset_keys import LAYER_ASSETS


def test_definitions_load_with_every_layer_sensor_schedule_and_job() -> None:
    prepare_dbt_manifest()
    defs = load_definitions()
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    for expected in [
        *LAYER_ASSETS,
        "monitoring/served_traffic_profile",
        "notifications/run_records",
    ]:
        assert expected in keys, expected
    groups = {
        graph.get(key).group_name
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable
    }
    # monitoring_daily is partitioned by decision day: daily_monitoring_job runs it per day
    assert groups == {g for layer in LAYERS.values() for g in layer} | {"monitoring_daily"}
    assert defs.resolve_job_def("daily_monitoring_job").partitions_def is not None
    assert {s.name for s in defs.sensors} == {
        "kafka_arrivals_sensor",
        "stale_feature_partitions_sensor",
        "run_failure_alert_sensor",
        "retrain_on_drift_sensor",
        "check_alert_sensor",
        "run_records_sensor",
    }
    assert {s.name for s in defs.schedules} == {
        "ingest_schedule",
        "retrain_schedule",
        "delta_maintenance_schedule",
        "daily_monitoring_schedule",
    }
    defs.resolve_job_def("ingest_job")
    refresh = defs.resolve_job_def("feature_refresh_job")
    assert refresh.partitions_def is not None
    for group in ("user_txn_velocity_v1", "merchant_fraud_v1"):
        assert graph.get(dg.AssetKey(["features", group])).is_partitioned


def test_definitions_every_own_asset_has_a_description() -> None:
    graph = load_definitions().resolve_asset_graph()
    missing = [
        key.to_user_string()
        for key in graph.get_all_asset_keys()
        if graph.get(key).is_materializable and not graph.get(key).description
    ]
    assert not missing, missing


def test_definitions_model_promotion_is_gated_by_a_blocking_check() -> None:
    graph = load_definitions().resolve_asset_graph()
    checks = graph.get_check_keys_for_assets({dg.AssetKey(["models", "fraud_catboost"])})
    assert any(c.name == "fraud_catboost_meets_minimum_quality" for c in checks)
