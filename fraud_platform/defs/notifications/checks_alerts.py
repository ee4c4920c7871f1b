"""Failed or warned asset checks go to the notifier (alerts log + webhook), one readable
message each, with links to the run and to the asset's checks in the UI."""

from __future__ import annotations

import json

import dagster as dg

from fraud_platform.lib.notifications.messages import CheckOutcome, check_message, check_title
from fraud_platform.resources import NotifierResource

BATCH = 50
PLANNED = "PLANNED"


def _check_keys(context: dg.SensorEvaluationContext) -> list[dg.AssetCheckKey]:
    repository = context.repository_def
    return sorted(repository.asset_graph.asset_check_keys, key=str) if repository else []


def new_evaluations(
    instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey], cursor: dict
) -> tuple[list, dict]:
    """(completed check executions not handled yet, oldest first; the next cursor).

    The execution history is per check (it is indexed on every storage, unlike a scan of the
    event log by id). Execution ids grow with time, but one is assigned when the check is
    planned and completed later: the cursor is the highest id below which everything is
    handled, plus the handled ids above it."""
    after, done = int(cursor.get("after", 0)), set(cursor.get("done", []))
    completed, pending = [], []
    for key in keys:
        for record in instance.event_log_storage.get_asset_check_execution_history(key, BATCH):
            if record.id <= after or record.id in done:
                continue
            if record.status.value == PLANNED:
                run = instance.get_run_by_id(record.run_id)
                if run is not None and not run.is_finished:
                    pending.append(record.id)  # still running: look again next tick
                continue
            completed.append(record)
    completed.sort(key=lambda r: r.id)
    handled = done | {r.id for r in completed}
    floor = min(pending) - 1 if pending else max([after, *handled])
    return completed, {"after": floor, "done": sorted(i for i in handled if i > floor)}


def run_partition(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The partition (or partition range) the run materialized, from its tags."""
    run = instance.get_run_by_id(run_id)
    tags = run.tags if run is not None else {}
    first = tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/asset_partition_range_end")
    return tags.get("dagster/partition") or (f"{first}..{last}" if first and last else None)


def outcome_of(instance: dg.DagsterInstance, record) -> CheckOutcome:
    """A stored check evaluation in plain values. A check evaluated with a partitioned asset's
    materialization carries no partition of its own: the run's is the one it judged."""
    evaluation = record.event.dagster_event.event_specific_data
    return CheckOutcome(
        asset=evaluation.asset_key.to_user_string(),
        check=evaluation.check_name,
        passed=bool(evaluation.passed),
        severity=evaluation.severity.value,
        run_id=record.run_id,
        partition=getattr(evaluation, "partition", None)
        or record.partition
        or run_partition(instance, record.run_id),
        description=evaluation.description,
        metadata={name: value.value for name, value in evaluation.metadata.items()},
    )


def _latest_id(instance: dg.DagsterInstance, keys: list[dg.AssetCheckKey]) -> int:
    ids = [
        r.id
        for key in keys
        for r in instance.event_log_storage.get_asset_check_execution_history(key, 1)
    ]
    return max(ids, default=0)


@dg.sensor(
    name="check_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every failed asset check (ERROR) and every warned one (WARN) of any run, drift, skew, "
        "quality, lag and freshness checks alike, goes to the alerts log and the webhook: what "
        "failed, its figure against the threshold, the asset and partition, links to the UI. "
        "The cursor is the last check evaluation delivered (a failed delivery is retried)."
    ),
)
def check_alert_sensor(
    context: dg.SensorEvaluationContext, notifier: NotifierResource
) -> dg.SensorResult | dg.SkipReason:
    keys = _check_keys(context)
    if not context.cursor:  # a new sensor alerts from now on, not on all history
        return dg.SensorResult(cursor=json.dumps({"after": _latest_id(context.instance, keys)}))
    records, cursor = new_evaluations(context.instance, keys, json.loads(context.cursor))
    sent = 0
    for record in records:
        outcome = outcome_of(context.instance, record)
        if not outcome.passed:
            # A webhook that keeps refusing raises: the tick fails loudly and, the cursor not
            # having moved, the next tick delivers again (at least once, never lost).
            notifier.notify(check_title(outcome), check_message(outcome, notifier.ui_url))
            sent += 1
    if records:
        context.log.info(f"{len(records)} check evaluation(s), {sent} alert(s) sent")
        return dg.SensorResult(cursor=json.dumps(cursor))
    return dg.SkipReason("no new check evaluations")
