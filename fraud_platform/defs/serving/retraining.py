"""Drift-triggered retraining: a failing drift check requests ``retrain_job`` (once per failing
evaluation). The retrain goes through the same gates as every other: minimum quality, then
champion vs challenger.

A drift retrain trades label maturity for recency (``RECOVERY_RUN_CONFIG``): with the daily
defaults (7-day maturity, 5 test + 3 validation days) the newest row the model learns from is
~17 days old, so after a switch the fit would hold no post-drift traffic for over two weeks.
With 3 days of maturity, 2 test and 1.5 validation days it is ~7 days old (measured in
``benchmarks/drift_recovery.py``)."""

import dagster as dg

from fraud_platform.defs.serving import assets as serving

DRIFT_CHECK = dg.AssetCheckKey(
    dg.AssetKey(["monitoring", "served_traffic_profile"]), "served_features_have_not_drifted"
)
TRIGGER_TAG = "fraud_platform/trigger"
DRIFT_TRIGGER = "drift"
HISTORY_LIMIT = 50
RECOVERY_RUN_CONFIG = {
    "ops": {
        "training__fraud_training_set": {"config": {"maturity_days": 3.0}},
        "models__fraud_catboost": {
            "config": {"test_days": 2.0, "validation_days": 1.5, "gap_days": 0.25}
        },
    }
}


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
                run_config=RECOVERY_RUN_CONFIG,
                tags={TRIGGER_TAG: DRIFT_TRIGGER, "fraud_platform/drift_check_run": latest.run_id},
            )
        )
        context.log.info(
            f"drift check failed ({len(failing)} new failing evaluation(s)): requesting retrain"
        )
    return dg.SensorResult(run_requests=requests, cursor=str(newest))
