"""Bronze: Kafka topics into append-only Delta tables, exactly once, rejects to a dead-letter table."""

import json
from collections.abc import Iterable

import dagster as dg

from fraud_platform import names
from fraud_platform.lib.contracts.events import ALL_TOPICS, SCORES
from fraud_platform.lib.ingestion.bronze import committed_offsets
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import KafkaResource

GROUP = "ingestion"
# bronze/scores (the service's decisions) feed monitoring, not the warehouse: its own group, so
# the ingestion layer and job (which rebuild dbt) leave it to the decision-log job and sensor.
DECISION_LOG_GROUP = "decision_log"
TABLES = {**names.BRONZE_TABLES, SCORES: names.SCORES_TABLE}
BRONZE_KEYS = {topic: dg.AssetKey(TABLES[topic].split("/")) for topic in ALL_TOPICS}


class RejectionConfig(dg.Config):
    max_rejection_rate: float = 0.01
    """Fail the check when more than this share of a batch went to the dead-letter table."""


def _bronze_asset(topic: str) -> dg.Definitions:
    check_name = f"{topic}_rejection_rate_below_threshold"

    @dg.asset(
        key=BRONZE_KEYS[topic],
        group_name=DECISION_LOG_GROUP if topic == SCORES else GROUP,
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
                "dagster/row_count": delta.row_count(TABLES[topic]),
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
                "dead_letter_uri": delta.uri(names.DEAD_LETTER_TABLE),
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


# Event-driven jobs run their steps in the run worker's process: a step process per asset
# would import the code location again (25-35 s each on 2 busy cores) for seconds of work.
ingest_job = dg.define_asset_job(
    names.INGEST_JOB,
    selection=dg.AssetSelection.groups(GROUP, "transform"),
    description="New Kafka events into bronze, then silver and gold (dbt).",
    executor_def=dg.in_process_executor,
    tags={names.RUN_QUEUE_TAG: names.INGEST_JOB},
)
decision_log_job = dg.define_asset_job(
    names.DECISION_LOG_JOB,
    selection=dg.AssetSelection.groups(DECISION_LOG_GROUP),
    description="New decisions of the scoring service (the scores topic) into bronze/scores.",
    executor_def=dg.in_process_executor,
    tags={names.RUN_QUEUE_TAG: names.DECISION_LOG_JOB},
)
PROFILES_KEY = dg.AssetKey(names.PROFILES_TABLE.split("/"))


def arrivals_selection(
    repository: dg.RepositoryDefinition, topics: Iterable[str]
) -> tuple[list[dg.AssetKey], list[dg.AssetCheckKey]]:
    """The assets of the ingest job that new events of ``topics`` can change, and their checks.

    The assets: the topics' bronze tables and what the job builds from them (the dbt models
    downstream), plus the account profiles, which PostgreSQL gives no arrival signal for and so
    are polled by every run. A run of the whole job would also rebuild and test the models of
    the quiet topics, whose inputs did not move (for a burst of transactions: 12 of 20 assets).
    The checks: those of these assets, less the ones marked ``names.SKIPPED_ON_ARRIVAL`` (dbt
    tests that re-check the event contracts, and the tests of the intermediate views).
    Scheduled and UI runs still cover the whole job and every check."""
    graph = repository.asset_graph
    roots = [BRONZE_KEYS[topic] for topic in topics] + [PROFILES_KEY]
    selection = dg.AssetSelection.assets(*roots).downstream() & ingest_job.selection
    assets = sorted(selection.resolve(graph), key=lambda key: key.to_user_string())
    checks = [
        key
        for key in sorted(graph.get_check_keys_for_assets(set(assets)), key=str)
        if not graph.get_check_spec(key).metadata.get(names.SKIPPED_ON_ARRIVAL)
    ]
    return assets, checks


# A run that has not reached its steps yet will read every event published until then.
WAITING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]


def waiting_run(instance: dg.DagsterInstance, job_name: str) -> str | None:
    """The id of a run of ``job_name`` that is queued or starting, if any."""
    records = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=WAITING), limit=1)
    return records[0].dagster_run.run_id if records else None


@dg.sensor(
    name="kafka_arrivals_sensor",
    jobs=[ingest_job, decision_log_job],
    minimum_interval_seconds=names.EVENT_SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.STOPPED,
)
def kafka_arrivals_sensor(
    context: dg.SensorEvaluationContext,
    kafka: KafkaResource,
    delta: dg.ResourceParam[DeltaStore],
) -> dg.SensorResult | dg.SkipReason:
    """Requests a run when a topic's end offsets move past what bronze has committed: the
    ingest job for the input topics (only the assets their events can change, see
    ``arrivals_selection``), the decision-log job for ``scores``.

    The cursor (last seen end offsets) is only a hint: the Delta log decides what is new. No
    run is requested for a job whose previous run has not started yet: that run will take
    these events too, so arrivals do not pile up runs in the queue (events of a topic it did
    not select are seen again by the first tick after it and get a run of their own).
    """
    kafka.ensure_topics()
    arrivals: dict[str, int] = {}
    ends: dict[str, dict[str, int]] = {}
    for topic in ALL_TOPICS:
        end = kafka.end_offsets(topic)
        done = committed_offsets(topic, delta)
        waiting = sum(max(0, high - done.get(p, 0)) for p, high in end.items())
        ends[topic] = {str(p): o for p, o in end.items()}
        if waiting:
            arrivals[topic] = waiting
    cursor = json.dumps(ends, sort_keys=True)
    if not arrivals:
        return dg.SkipReason("no new events in Kafka beyond what bronze holds")
    inputs = {t: n for t, n in arrivals.items() if t != SCORES}
    decisions = {t: n for t, n in arrivals.items() if t == SCORES}
    if context.repository_def is None:
        raise dg.DagsterInvariantViolationError(
            "kafka_arrivals_sensor needs its definitions (build_sensor_context(definitions=...))"
        )
    requests = []
    if inputs and waiting_run(context.instance, ingest_job.name) is None:
        assets, checks = arrivals_selection(context.repository_def, inputs)
        requests.append(
            dg.RunRequest(
                run_key=f"{ingest_job.name}:{cursor}",
                job_name=ingest_job.name,
                asset_selection=assets,
                asset_check_keys=checks,
                tags={names.ARRIVALS_TAG: json.dumps(inputs, sort_keys=True)},
            )
        )
    if decisions and waiting_run(context.instance, decision_log_job.name) is None:
        requests.append(
            dg.RunRequest(
                run_key=f"{decision_log_job.name}:{cursor}",
                job_name=decision_log_job.name,
                tags={names.ARRIVALS_TAG: json.dumps(decisions, sort_keys=True)},
            )
        )
    if not requests:
        return dg.SkipReason(f"new events {arrivals} will be read by the runs not started yet")
    return dg.SensorResult(run_requests=requests, cursor=cursor)


# A module holding a Definitions object contributes only that object: put everything in it.
defs = dg.Definitions.merge(
    *[_bronze_asset(topic) for topic in ALL_TOPICS],
    dg.Definitions(
        jobs=[ingest_job, decision_log_job],
        sensors=[kafka_arrivals_sensor],
        schedules=[
            dg.ScheduleDefinition(
                name="ingest_schedule",
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
