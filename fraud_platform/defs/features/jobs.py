"""Feature refresh: the job that recomputes a range of feature partitions, and the sensor that
runs it after each ingestion for exactly the partitions the new events made stale."""

import dagster as dg

from fraud_platform import names
from fraud_platform.defs.partitions import FEATURE_PARTITIONS

GROUP = "features"
BRONZE_KEYS = frozenset(dg.AssetKey(table.split("/")) for table in names.BRONZE_TABLES.values())

feature_refresh_job = dg.define_asset_job(
    names.FEATURE_REFRESH_JOB,
    selection=dg.AssetSelection.groups(GROUP),
    description=(
        "Recompute a range of daily feature partitions (one step for every group) and refresh the "
        "online store."
    ),
    # one process for the whole run (see ingest_job); refresh runs write the same Delta
    # partitions, so they run one at a time
    executor_def=dg.in_process_executor,
    tags={names.RUN_QUEUE_TAG: names.FEATURE_REFRESH_JOB},
)


def first_new_event_date(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The earliest event date among the rows the bronze assets of ``run_id`` appended."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    dates = []
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None or materialization.asset_key not in BRONZE_KEYS:
            continue
        first = materialization.metadata.get("first_event_date")
        if first is not None and first.value:
            dates.append(str(first.value))
    return min(dates) if dates else None


def stale_partition_range(first_new: str | None, today: str) -> tuple[str, str]:
    """A new event of date D changes the window and lifetime aggregates of every later row of
    its entity: partitions D..today are stale, earlier ones are not. Today's partition is always
    refreshed (it keeps the online store fresh)."""
    start = min(first_new, today) if first_new else today
    return max(start, FEATURE_PARTITIONS.get_first_partition_key()), today


@dg.run_status_sensor(
    name="stale_feature_partitions_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=feature_refresh_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    # Dagster's default, 30 s, would be most of the budget
    minimum_interval_seconds=names.EVENT_SENSOR_INTERVAL_S,
)
def stale_feature_partitions_sensor(
    context: dg.RunStatusSensorContext,
) -> dg.RunRequest | dg.SkipReason:
    """After each ingestion, recompute exactly the feature partitions its events made stale:
    from the earliest event date it appended (a late event reaches back days) to today."""
    if context.dagster_run.job_name != names.INGEST_JOB:
        return dg.SkipReason(f"{context.dagster_run.job_name} is not {names.INGEST_JOB}")
    first_new = first_new_event_date(context.instance, context.dagster_run.run_id)
    start, end = stale_partition_range(first_new, FEATURE_PARTITIONS.get_last_partition_key())
    return dg.RunRequest(
        run_key=f"{context.dagster_run.run_id}:{start}:{end}",
        tags={
            "dagster/asset_partition_range_start": start,
            "dagster/asset_partition_range_end": end,
            "fraud_platform/after_ingest_run": context.dagster_run.run_id,
        },
    )


defs = dg.Definitions(jobs=[feature_refresh_job], sensors=[stale_feature_partitions_sensor])
