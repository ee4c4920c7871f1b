"""A daily job that compacts and vacuums every Delta table of the platform."""

import dagster as dg

from fraud_platform import names
from fraud_platform.lib.contracts.events import ALL_TOPICS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.serving import registry
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.storage.maintenance import compact_and_vacuum


class MaintenanceConfig(dg.Config):
    retention_hours: int = 168
    """Vacuum keeps every file a version of the last ``retention_hours`` needs (min 168)."""


def maintained_tables() -> list[str]:
    tables = [names.bronze_table(topic) for topic in ALL_TOPICS] + [names.DEAD_LETTER_TABLE]
    tables += [names.feature_table(g.versioned_name) for g in FEATURE_GROUPS]
    tables += [names.feature_state_table(g.versioned_name) for g in FEATURE_GROUPS]
    tables += [names.TRAINING_SET_TABLE, registry.TABLE]
    return tables


@dg.op
def compact_and_vacuum_tables(
    context: dg.OpExecutionContext,
    config: MaintenanceConfig,
    delta: dg.ResourceParam[DeltaStore],
) -> None:
    """Compact then vacuum each existing table; one summary line per table."""
    summary = {}
    for table in maintained_tables():
        if not delta.exists(table):
            continue
        result = compact_and_vacuum(delta, table, retention_hours=config.retention_hours)
        context.log.info(
            f"{delta.uri(table)}: {result.files_before} -> {result.files_after} files, "
            f"{result.files_removed_by_vacuum} vacuumed"
        )
        summary[table] = [result.files_before, result.files_after]
    context.log.info(f"maintenance done on {len(summary)} tables")


@dg.job(
    description=(
        "Compact and vacuum the Delta tables (bronze, dead letters, features, training, the "
        "model registry record)."
    )
)
def delta_maintenance_job() -> None:
    compact_and_vacuum_tables()


delta_maintenance_schedule = dg.ScheduleDefinition(
    job=delta_maintenance_job, cron_schedule="30 2 * * *", name="delta_maintenance_schedule"
)
