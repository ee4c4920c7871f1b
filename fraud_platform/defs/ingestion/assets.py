"""Bronze: Kafka topics into append-only Delta tables, exactly once, rejects to a dead-letter table."""

import json

import dagster as dg

from fraud_platform.defs.features.assets import FEATURE_PARTITIONS
from fraud_platform.lib.contracts.events import TOPICS
from fraud_platform.lib.ingestion.bronze import DEAD_LETTER_TABLE, committed_offsets
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import KafkaResource

GROUP = "ingestion"
BRONZE_KEYS = {topic: dg.AssetKey(["bronze", topic]) for topic in TOPICS}


class RejectionConfig(dg.Config):
    max_rejection_rate: float = 0.01
    """Fail the check when more than this share of a batch went to the dead-letter table."""


def _bronze_asset(topic: str) -> dg.Definitions:
    check_name = f"{topic}_rejection_rate_below_threshold"

    @dg.asset(
        key=BRONZE_KEYS[topic],
        group_name=GROUP,
        kinds={"kafka", "delta"},
        description=(
            f"Every valid `{topic}` event from Kafka, exactly once (offsets are committed in the "
            "same Delta commit as the rows). Invalid events go to the dead-letter table."
        ),
        check_specs=[dg.AssetCheckSpec(check_name, asset=BRONZE_KEYS[topic])],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        config: RejectionConfig,
        kafka: KafkaResource,
        delta: dg.ResourceParam[DeltaStore],
    ) -> dg.MaterializeResult:
        kafka.ensure_topics()
        result = kafka.ingest(topic, delta)
        context.log.info(
            f"{topic}: +{result.accepted} rows, {result.rejected} rejected in {result.elapsed_s:.1f}s; "
            f"offsets {result.offsets_before} -> {result.offsets_after}"
        )
        rate = result.rejected / result.read if result.read else 0.0
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": delta.row_count(f"bronze/{topic}"),
                "rows_added": result.accepted,
                "rejected": result.rejected,
                "delta_version": result.delta_version if result.delta_version is not None else -1,
                "offsets": dg.MetadataValue.json(
                    {str(p): o for p, o in result.offsets_after.items()}
                ),
                "lag": dg.MetadataValue.json({str(p): o for p, o in result.lag.items()}),
                "events_per_s": round(result.read / result.elapsed_s, 1)
                if result.elapsed_s
                else 0.0,
                "dead_letter_uri": delta.uri(DEAD_LETTER_TABLE),
                "first_event_date": str(result.event_dates[0]) if result.event_dates else "",
                "last_event_date": str(result.event_dates[1]) if result.event_dates else "",
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=check_name,
                    passed=rate <= config.max_rejection_rate,
                    metadata={
                        "rejection_rate": rate,
                        "rejected": result.rejected,
                        "read": result.read,
                    },
                )
            ],
        )

    return dg.Definitions(assets=[_asset])


ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.groups(GROUP, "transform"),
    description="New Kafka events into bronze, then silver and gold (dbt).",
)

feature_refresh_job = dg.define_asset_job(
    "feature_refresh_job",
    selection=dg.AssetSelection.groups("features"),
    description=(
        "Recompute a range of daily feature partitions (one step per group) and refresh the "
        "online store."
    ),
)


@dg.sensor(
    name="kafka_arrivals_sensor",
    job=ingest_job,
    minimum_interval_seconds=15,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def kafka_arrivals_sensor(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    delta: dg.ResourceParam[DeltaStore],
) -> dg.SensorResult | dg.SkipReason:
    """Requests a run when a topic's end offsets move past what bronze has committed.

    The cursor (last seen end offsets) is only a hint: the Delta log decides what is new.
    """
    kafka.ensure_topics()
    arrivals: dict[str, int] = {}
    ends: dict[str, dict[str, int]] = {}
    for topic in TOPICS:
        end = kafka.end_offsets(topic)
        done = committed_offsets(topic, delta)
        waiting = sum(max(0, high - done.get(p, 0)) for p, high in end.items())
        ends[topic] = {str(p): o for p, o in end.items()}
        if waiting:
            arrivals[topic] = waiting
    cursor = json.dumps(ends, sort_keys=True)
    if not arrivals:
        return dg.SkipReason("no new events in Kafka beyond what bronze holds")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=cursor, tags={"arrivals": json.dumps(arrivals, sort_keys=True)})
        ],
        cursor=cursor,
    )


def first_new_event_date(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The earliest event date among the rows the bronze assets of ``run_id`` appended."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    dates = []
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is None or materialization.asset_key not in BRONZE_KEYS.values():
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
    monitored_jobs=[ingest_job],
    request_job=feature_refresh_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def stale_feature_partitions_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    """After each ingestion, recompute exactly the feature partitions its events made stale:
    from the earliest event date it appended (a late event reaches back days) to today."""
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


# A module holding a Definitions object contributes only that object: put everything in it.
defs = dg.Definitions.merge(
    *[_bronze_asset(topic) for topic in TOPICS],
    dg.Definitions(
        jobs=[ingest_job, feature_refresh_job],
        sensors=[kafka_arrivals_sensor, stale_feature_partitions_sensor],
        schedules=[
            dg.ScheduleDefinition(
                name="feature_refresh_schedule",
                job=ingest_job,
                cron_schedule="*/15 * * * *",
                description=(
                    "Bounds online-store staleness to 15 minutes even without arrivals: the "
                    "ingestion run is followed by a refresh of the stale feature partitions."
                ),
            )
        ],
    ),
)
