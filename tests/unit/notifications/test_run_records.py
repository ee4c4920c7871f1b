"""A run's record: key figures from the metadata of what it materialized, appended once."""

import json

import polars as pl

from fraud_platform.lib.notifications.run_records import append_run_record, run_record
from fraud_platform.lib.storage.delta import DeltaStore

ASSETS = {"model_asset": "models/m", "champion_asset": "serving/c", "backtest_asset": "serving/b"}
RETRAIN = {
    "models/m": {"model_tag": "m:new", "test_average_precision": 0.0, "test_auc_roc": 0.93},
    "serving/c": {"decision": "promoted", "champion": "m:new", "challenger": "m:new"},
    "serving/b": {"metrics": {"m:new": {"average_precision": 0.71, "auc_roc": 0.97, "rows": 9}}},
    "training/set": {"dagster/row_count": 100},
}


def test_run_record_takes_the_figures_of_each_kind() -> None:
    record = run_record("r1", "retrain_job", RETRAIN, started=100.0, ended=161.5, **ASSETS)
    assert record is not None
    assert record.kinds == "training,promotion,backtest"
    assert (record.model_tag, record.decision, record.champion) == ("m:new", "promoted", "m:new")
    assert record.test_average_precision == 0.0  # a zero figure is kept, not skipped
    assert record.test_auc_roc == 0.93 and record.duration_s == 61.5
    assert json.loads(record.backtest) == {"m:new": {"average_precision": 0.71, "auc_roc": 0.97}}


def test_run_record_none_for_runs_that_touch_no_model() -> None:
    materialized = {"training/set": {"dagster/row_count": 100}}
    assert run_record("r2", "ingest_job", materialized, started=1.0, ended=2.0, **ASSETS) is None


def test_append_run_record_writes_each_run_once(tmp_path) -> None:
    store = DeltaStore(str(tmp_path))
    first = run_record("r1", "retrain_job", RETRAIN, started=1.0, ended=2.0, **ASSETS)
    other = run_record("r2", "retrain_job", RETRAIN, started=3.0, ended=5.0, **ASSETS)
    assert append_run_record(store, "notifications/run_records", first) is not None
    assert append_run_record(store, "notifications/run_records", first) is None  # repeated tick
    append_run_record(store, "notifications/run_records", other)
    table = store.read("notifications/run_records").sort("run_id")
    assert table["run_id"].to_list() == ["r1", "r2"]
    assert table["duration_s"].to_list() == [1.0, 2.0]
    assert table.schema["started_at"] == pl.Datetime("us", "UTC")
