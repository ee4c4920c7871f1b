"""Drift-triggered retraining: a failing drift check requests ``retrain_job`` (once per failing
evaluation). The retrain goes through the same gates as every other: minimum quality, then
champion vs challenger."""

import dagster as dg

from fraud_platform.defs.serving import assets as serving

DRIFT_CHECK = dg.AssetCheckKey(
    dg.AssetKey(["monitoring", "served_traffic_profile"]), "served_features_have_not_drifted"
)
TRIGGER_TAG = "fraud_platform/trigger"
DRIFT_TRIGGER = "drift"
HISTORY_LIMIT = 50


def new_failing_evaluations(instance: dg.DagsterInstance, after: int) -> tuple[list, int]:
    """(failed drift-check executions newer than record id ``after`` that were not produced by
    a drift-triggered retrain itself, newest first; the newest record id seen)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        DRIFT_CHECK, limit=HISTORY_LIMIT
    )
    newest = max([after, *(r.id for r in records)])
    failing = []
    for record in records:  # newest first
        if record.id <= after or record.event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        if getattr(evaluation, "passed", True):
            continue
        if getattr(evaluation, "severity", None) == dg.AssetCheckSeverity.WARN:
            continue  # notable drift under the failing threshold: a warning, not a retrain
        run = instance.get_run_by_id(record.run_id) if record.run_id else None
        if run is not None and run.tags.get(TRIGGER_TAG) == DRIFT_TRIGGER:
            continue  # the retrain's own monitoring: no retrain loop on persistent drift
        failing.append(record)
    return failing, newest


@dg.sensor(
    name="retrain_on_drift_sensor",
    job=serving.retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests retrain_job when the drift check served_features_have_not_drifted fails; "
        "one run per failing evaluation (the cursor is the last check execution seen)."
    ),
)
def retrain_on_drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else 0
    failing, newest = new_failing_evaluations(context.instance, after)
    requests = []
    if failing:
        latest = failing[0]
        requests.append(
            dg.RunRequest(
                run_key=f"drift-check-{latest.id}",
                tags={TRIGGER_TAG: DRIFT_TRIGGER, "fraud_platform/drift_check_run": latest.run_id},
            )
        )
        context.log.info(
            f"drift check failed ({len(failing)} new failing evaluation(s)): requesting retrain"
        )
    return dg.SensorResult(run_requests=requests, cursor=str(newest))
