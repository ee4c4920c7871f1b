"""Drift-triggered retraining: a failing daily drift check requests ``retrain_job``, and so
does every daily drift evaluation of the ``RECOVERY_DAYS`` decision days after it (a recovery
period: post-switch labels mature a day at a time, and each retrain sees one more day of the
new traffic; the gate still promotes only a better model). The daily feature drift check
compares a day with the days before it, so it fails on the switch and passes again once its
history holds the new traffic: without the follow-up retrains the only drift retrain would be
the one on the switch day, trained before any post-switch label existed.

A drift retrain trades label maturity for recency (``RECOVERY_RUN_CONFIG``): with the daily
defaults (7-day maturity, 5 test + 3 validation days) the newest row the model learns from is
~17 days old, so after a switch the fit would hold no post-drift traffic for over two weeks.
With 3 days of maturity, 2 test and 1.5 validation days it is ~7 days old (measured in
``benchmarks/drift_recovery.py``)."""

from datetime import date, timedelta

import dagster as dg

from fraud_platform import names
from fraud_platform.defs.serving import assets as serving

DAILY_DRIFT_ASSET = dg.AssetKey(names.DAILY_FEATURE_DRIFT_TABLE.split("/"))
DRIFT_CHECK = dg.AssetCheckKey(DAILY_DRIFT_ASSET, "daily_features_have_not_drifted")
RECOVERY_DAYS = 7
TRIGGER_TAG = "fraud_platform/trigger"
DRIFT_TRIGGER = "drift"
HISTORY_LIMIT = 50
RECOVERY_RUN_CONFIG = {
    "ops": {
        "training__fraud_training_set": {"config": {"maturity_days": 3.0}},
        "models__fraud_catboost": {
            "config": {
                "test_days": 2.0,
                "validation_days": 1.5,
                "gap_days": 0.25,
                "refit": True,
            }
        },
    }
}


def _partition_day(record) -> date | None:
    if record.partition:
        return date.fromisoformat(record.partition)
    evaluation = record.event.dagster_event.event_specific_data if record.event else None
    value = (getattr(evaluation, "metadata", None) or {}).get("decision_date")
    return date.fromisoformat(str(value.value)) if value is not None else None


def _triggered_by_retrain(instance: dg.DagsterInstance, record) -> bool:
    run = instance.get_run_by_id(record.run_id) if record.run_id else None
    return run is not None and run.tags.get(TRIGGER_TAG) == DRIFT_TRIGGER


def new_evaluations(instance: dg.DagsterInstance, after: int) -> tuple[list, list, int]:
    """(failing, recovering, newest record id): the daily drift evaluations newer than record id
    ``after`` that failed with ERROR severity, and those that fell within ``RECOVERY_DAYS``
    decision days after the latest failing day (newest first; none produced by a drift-triggered
    retrain itself)."""
    records = instance.event_log_storage.get_asset_check_execution_history(
        DRIFT_CHECK, limit=HISTORY_LIMIT
    )
    newest = max([after, *(r.id for r in records)])
    failed_days = []
    for record in records:
        evaluation = record.event.dagster_event.event_specific_data if record.event else None
        if evaluation is None or getattr(evaluation, "passed", True):
            continue
        if getattr(evaluation, "severity", None) == dg.AssetCheckSeverity.WARN:
            continue  # notable drift under the failing threshold: a warning, not a retrain
        if _triggered_by_retrain(instance, record):
            continue
        failed_days.append((record, _partition_day(record)))
    failing = [r for r, _ in failed_days if r.id > after]
    last_failure = max((d for _, d in failed_days if d is not None), default=None)
    recovering = []
    if last_failure is not None:
        for record in records:
            day = _partition_day(record)
            if (
                record.id > after
                and record.event is not None
                and day is not None
                and last_failure < day <= last_failure + timedelta(days=RECOVERY_DAYS)
                and not _triggered_by_retrain(instance, record)
            ):
                recovering.append(record)
    return failing, recovering, newest


@dg.sensor(
    name="retrain_on_drift_sensor",
    job=serving.retrain_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Requests retrain_job when the daily drift check daily_features_have_not_drifted fails, "
        "and on each daily evaluation of the RECOVERY_DAYS decision days after a failure "
        "(one run per tick; the cursor is the last check execution seen)."
    ),
)
def retrain_on_drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    after = int(context.cursor) if context.cursor else 0
    failing, recovering, newest = new_evaluations(context.instance, after)
    requests = []
    latest = (failing or recovering or [None])[0]
    if latest is not None:
        kind = "drift" if failing else "recovery"
        requests.append(
            dg.RunRequest(
                run_key=f"{kind}-check-{latest.id}",
                run_config=RECOVERY_RUN_CONFIG,
                tags={
                    TRIGGER_TAG: DRIFT_TRIGGER,
                    "fraud_platform/drift_check_run": latest.run_id,
                    "fraud_platform/retrain_reason": kind,
                },
            )
        )
        context.log.info(
            f"{len(failing)} new failing and {len(recovering)} recovery-period drift "
            f"evaluation(s): requesting a {kind} retrain"
        )
    return dg.SensorResult(run_requests=requests, cursor=str(newest))
