"""Delta table maintenance: compact the small files micro-batches leave behind, then vacuum
files no version within the retention window still needs."""

from __future__ import annotations

from dataclasses import dataclass

from fraud_platform.lib.storage.delta import DeltaStore


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    files_before: int
    files_after: int
    files_removed_by_vacuum: int
    version_after: int


def compact_and_vacuum(
    store: DeltaStore, table: str, *, retention_hours: int = 168
) -> MaintenanceResult:
    """Bin-pack the table's files (a data-neutral commit: rows, and the Delta application
    transactions that record ingested Kafka offsets, are unchanged), then delete files that
    only versions older than ``retention_hours`` reference. Time travel within the retention
    window keeps working; the Delta default (7 days) is enforced as a floor."""
    delta_table = store.open(table)
    files_before = len(delta_table.file_uris())
    delta_table.optimize.compact()
    removed = delta_table.vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=True
    )
    delta_table = store.open(table)
    return MaintenanceResult(
        table=table,
        files_before=files_before,
        files_after=len(delta_table.file_uris()),
        files_removed_by_vacuum=len(removed),
        version_after=delta_table.version(),
    )
