"""A daily job that compacts and vacuums every Delta table of the platform."""

import dagster as dg

from fraud_platform.lib.contracts.events import ALL_TOPICS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.ingestion.bronze import bronze_path, dead_letter_path
from fraud_platform.lib.storage.maintenance import compact_and_vacuum
from fraud_platform.resources import DeltaResource


class MaintenanceConfig(dg.Config):
    retention_hours: int = 168
    """Vacuum keeps every file a version of the last ``retention_hours`` needs (min 168)."""


def maintained_tables(delta: DeltaResource) -> list[str]:
    tables = [bronze_path(delta.root, topic) for topic in ALL_TOPICS] + [
        dead_letter_path(delta.root)
    ]
    tables += [delta.uri(f"features/{g.versioned_name}") for g in FEATURE_GROUPS]
    tables += [delta.uri("training/fraud_training_set")]
    return tables


@dg.op
def compact_and_vacuum_tables(
    context: dg.OpExecutionContext, config: MaintenanceConfig, delta: DeltaResource
) -> None:
    """Compact then vacuum each existing table; one summary line per table."""
    from deltalake import DeltaTable

    summary = {}
    for uri in maintained_tables(delta):
        if not DeltaTable.is_deltatable(uri, storage_options=delta.storage_options or None):
            continue
        result = compact_and_vacuum(
            uri,
            retention_hours=config.retention_hours,
            storage_options=delta.storage_options or None,
        )
        context.log.info(
            f"{uri}: {result.files_before} -> {result.files_after} files, "
            f"{result.files_removed_by_vacuum} vacuumed"
        )
        summary[uri] = [result.files_before, result.files_after]
    context.log.info(f"maintenance done on {len(summary)} tables")


@dg.job(
    description="Compact and vacuum the Delta tables (bronze, dead letters, features, training)."
)
def delta_maintenance_job() -> None:
    compact_and_vacuum_tables()


delta_maintenance_schedule = dg.ScheduleDefinition(
    job=delta_maintenance_job, cron_schedule="30 2 * * *", name="delta_maintenance_schedule"
)
