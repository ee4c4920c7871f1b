"""Every successful run that trains, promotes or backtests a model leaves one row with its key
figures in the Delta table ``notifications/run_records`` (model tag, AP/AUC, gate decision,
champion, backtest figures, duration)."""

from __future__ import annotations

import dagster as dg

from fraud_platform import names
from fraud_platform.lib.notifications.run_records import append_run_record, run_record
from fraud_platform.lib.storage.delta import DeltaStore

RUN_RECORDS_KEY = dg.AssetKey(names.RUN_RECORDS_TABLE.split("/"))
BATCH = 50

run_records = dg.AssetSpec(
    key=RUN_RECORDS_KEY,
    group_name="notifications",
    kinds={"delta"},
    description=(
        "One row per successful training / promotion / backtest run: model tag, test AP and "
        "AUC, the gate's decision, the champion, backtest AP/AUC per model, duration. Written "
        "by run_records_sensor (once per run, whatever launched it: schedule, sensor, CLI)."
    ),
)


def materialized_in_run(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Asset key string -> plain metadata of what the run materialized (last one wins)."""
    out: dict[str, dict] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.dagster_event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {
            k: v.value for k, v in materialization.metadata.items()
        }
    return out


def record_run(instance: dg.DagsterInstance, run_id: str, delta: DeltaStore) -> dict | None:
    """Append the run's record (once); its figures, or None when it was not a model run."""
    run = instance.get_run_record_by_id(run_id)
    if run is None:
        return None
    record = run_record(
        run_id,
        run.dagster_run.job_name,
        materialized_in_run(instance, run_id),
        model_asset=names.MODEL_ASSET,
        champion_asset=names.CHAMPION_ASSET,
        backtest_asset=names.BACKTEST_ASSET,
        started=run.start_time,
        ended=run.end_time,
    )
    if record is None:
        return None
    version = append_run_record(delta, names.RUN_RECORDS_TABLE, record)
    return {
        "run_id": run_id,
        "kinds": record.kinds,
        "model_tag": record.model_tag or "",
        "test_average_precision": record.test_average_precision,
        "decision": record.decision or "",
        "delta_version": version,
    }


@dg.sensor(
    name="run_records_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Appends the key figures of each successful training / promotion / backtest run to "
        "notifications/run_records (the cursor follows run-success events; a record is written "
        "once per run even when a tick is repeated)."
    ),
)
def run_records_sensor(
    context: dg.SensorEvaluationContext, delta: dg.ResourceParam[DeltaStore]
) -> dg.SensorResult | dg.SkipReason:
    changes = context.instance.fetch_run_status_changes(
        dg.DagsterEventType.RUN_SUCCESS, limit=BATCH, cursor=context.cursor, ascending=True
    )
    events = []
    for change in changes.records:
        recorded = record_run(context.instance, change.run_id, delta)
        if recorded is not None and recorded["delta_version"] is not None:
            events.append(
                dg.AssetMaterialization(
                    asset_key=RUN_RECORDS_KEY,
                    metadata={k: v for k, v in recorded.items() if v is not None},
                )
            )
    if not changes.records:
        return dg.SkipReason("no newly succeeded runs")
    return dg.SensorResult(cursor=changes.cursor, asset_events=events)
