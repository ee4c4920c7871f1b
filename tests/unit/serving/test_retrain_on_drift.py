"""retrain_on_drift_sensor requests retrain_job exactly once per new failing drift evaluation."""

import dagster as dg

from fraud_platform.defs.serving.retraining import (
    DRIFT_CHECK,
    DRIFT_TRIGGER,
    TRIGGER_TAG,
    retrain_on_drift_sensor,
)


def _report(
    instance: dg.DagsterInstance,
    passed: bool,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=DRIFT_CHECK.asset_key,
            check_name=DRIFT_CHECK.name,
            passed=passed,
            metadata={"share_drifted": 0.9 if not passed else 0.0},
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
