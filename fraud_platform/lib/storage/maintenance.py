"""Delta table maintenance: compact the small files micro-batches leave behind, then vacuum
files no version within the retention window still needs."""

from __future__ import annotations

from dataclasses import dataclass

from deltalake import DeltaTable


@dataclass(frozen=True)
class MaintenanceResult:
    table: str
    files_before: int
    files_after: int
    files_removed_by_vacuum: int
    version_after: int


def compact_and_vacuum(
    uri: str,
    *,
    retention_hours: int = 168,
    storage_options: dict[str, str] | None = None,
) -> MaintenanceResult:
    """Bin-pack the table's files (a data-neutral commit: rows, and the Delta application
    transactions that record ingested Kafka offsets, are unchanged), then delete files that
    only versions older than ``retention_hours`` reference. Time travel within the retention
    window keeps working; the Delta default (7 days) is enforced as a floor."""
    table = DeltaTable(uri, storage_options=storage_options)
    files_before = len(table.file_uris())
    table.optimize.compact()
    removed = table.vacuum(
        retention_hours=retention_hours, dry_run=False, enforce_retention_duration=True
    )
    table = DeltaTable(uri, storage_options=storage_options)
    return MaintenanceResult(
        table=uri,
        files_before=files_before,
        files_after=len(table.file_uris()),
        files_removed_by_vacuum=len(removed),
        version_after=table.version(),
    )
