"""retrain_on_drift_sensor requests retrain_job once per new failing drift evaluation, and
on each daily evaluation within the recovery period after it."""

from datetime import date, timedelta

import dagster as dg

from fraud_platform.defs.serving.retraining import (
    DRIFT_CHECK,
    DRIFT_TRIGGER,
    RECOVERY_DAYS,
    TRIGGER_TAG,
    retrain_on_drift_sensor,
)


def _report(
    instance: dg.DagsterInstance,
    passed: bool,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    day: date | None = None,
) -> None:
    metadata: dict = {"share_drifted": 0.9 if not passed else 0.0}
    if day is not None:
        metadata["decision_date"] = day.isoformat()
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=DRIFT_CHECK.asset_key,
            check_name=DRIFT_CHECK.name,
            passed=passed,
            metadata=metadata,
            severity=severity,
        )
    )


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    return retrain_on_drift_sensor(context)


def test_one_retrain_per_failing_drift_evaluation() -> None:
    with dg.instance_for_test() as instance:
        assert retrain_on_drift_sensor.job_name == "retrain_job"
        first = _tick(instance, None)
        assert first.run_requests == []

        _report(instance, passed=True)
        passing = _tick(instance, first.cursor)
        assert passing.run_requests == []

        _report(instance, passed=False)
        failing = _tick(instance, passing.cursor)
        assert len(failing.run_requests) == 1
        request = failing.run_requests[0]
        assert request.tags[TRIGGER_TAG] == DRIFT_TRIGGER
        assert request.run_key.startswith("drift-check-")

        again = _tick(instance, failing.cursor)  # same evaluation: nothing new
        assert again.run_requests == []

        _report(instance, passed=False)  # a new failing evaluation: one more run
        _report(instance, passed=False)  # (two before the next tick still make one run)
        newer = _tick(instance, again.cursor)
        assert len(newer.run_requests) == 1
        assert newer.run_requests[0].run_key != request.run_key
        assert _tick(instance, newer.cursor).run_requests == []


def test_a_drift_warning_requests_no_retrain() -> None:
    with dg.instance_for_test() as instance:
        first = _tick(instance, None)
        _report(instance, passed=False, severity=dg.AssetCheckSeverity.WARN)
        assert _tick(instance, first.cursor).run_requests == []


def test_daily_evaluations_after_a_failure_request_recovery_retrains() -> None:
    switch = date(2026, 11, 1)
    with dg.instance_for_test() as instance:
        first = _tick(instance, None)
        _report(instance, passed=True, day=switch - timedelta(days=1))
        assert _tick(instance, first.cursor).run_requests == []  # no failure yet: no recovery
        _report(instance, passed=False, day=switch)
        failing = _tick(instance, first.cursor)
        assert [r.tags["fraud_platform/retrain_reason"] for r in failing.run_requests] == ["drift"]
        _report(instance, passed=True, day=switch + timedelta(days=1))
        _report(instance, passed=True, day=switch + timedelta(days=2))
        recovery = _tick(instance, failing.cursor)
        assert len(recovery.run_requests) == 1  # one retrain per tick, however many days
        assert recovery.run_requests[0].tags["fraud_platform/retrain_reason"] == "recovery"
        assert recovery.run_requests[0].tags[TRIGGER_TAG] == DRIFT_TRIGGER
        assert _tick(instance, recovery.cursor).run_requests == []
        _report(instance, passed=True, day=switch + timedelta(days=RECOVERY_DAYS + 1))
        assert _tick(instance, recovery.cursor).run_requests == []  # the period is over
