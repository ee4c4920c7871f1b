"""The one Delta access layer: where a table lives, opening and creating it, the exactly-once
commit, reads and replacing writes. Pure: no Dagster (``resources/delta.py`` hands a
``DeltaStore`` to the assets).

A table is named by its path under the store's root (``"bronze/transactions"``,
``"registry/model_events"``); the root is a local path or an s3:// / gs:// / az:// URI whose
credentials are in ``storage_options``.

``commit`` is the one append used for exactly-once writes: the rows, the Delta application
transactions (``{app_id: version}``, e.g. the next Kafka offset of a partition) and the commit
metadata become visible together, in ONE commit made on the snapshot the caller opened. A
concurrent commit carrying the same application id makes it fail with a conflict instead of
duplicating.

Two processes that find a table missing at the same moment both create it. deltalake 1.6 retries
the loser's CREATE TABLE as version 1 (a second table id: every writer that read version 0 then
fails with "Metadata changed"). ``open_or_create`` creates without commit retries, so the loser's
create fails and it opens the table the winner made.

``DeltaStore.append_serialized`` is for rows computed from the table's own state (a sequence
number, "not recorded yet"): they are built from one snapshot and committed on exactly that
snapshot; when another writer committed first, they are built again from the new one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError


def _properties(
    transactions: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
    retries: int | None = None,
) -> CommitProperties:
    return CommitProperties(
        custom_metadata={key: str(value) for key, value in (metadata or {}).items()},
        app_transactions=[Transaction(app, v) for app, v in sorted((transactions or {}).items())]
        or None,
        max_commit_retries=retries,
    )


def _arrow(rows: pa.Table | pl.DataFrame) -> pa.Table:
    return rows.to_arrow() if isinstance(rows, pl.DataFrame) else rows


def commit(
    table: DeltaTable,
    rows: pa.Table | pl.DataFrame | pa.RecordBatchReader,
    *,
    transactions: Mapping[str, int] | None = None,
    metadata: Mapping[str, Any] | None = None,
    retries: int | None = None,
    writer_properties: WriterProperties | None = None,
) -> int:
    """Append ``rows`` to ``table`` with the application transactions ``{app_id: version}`` and
    the commit ``metadata`` (values as strings) in one commit on the snapshot ``table`` holds;
    returns the new version. ``retries=0``: fail when another writer committed meanwhile,
    instead of deltalake's default of committing a non-conflicting append on the newer
    snapshot. A ``RecordBatchReader`` is written as it is read (the commit follows its last
    batch)."""
    write_deltalake(
        table,
        rows if isinstance(rows, pa.RecordBatchReader) else _arrow(rows),
        mode="append",
        commit_properties=_properties(transactions, metadata, retries),
        writer_properties=writer_properties,
    )
    return table.version()


@dataclass(frozen=True)
class Append:
    """What ``append_serialized`` commits: rows, application transactions, commit metadata."""

    rows: pa.Table | pl.DataFrame
    transactions: Mapping[str, int] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)


def recorded_versions(table: DeltaTable, app_ids: Iterable[str]) -> dict[str, int]:
    """The version each of ``app_ids`` recorded in the table's log; ids with none are left out."""
    found: dict[str, int] = {}
    for app_id in app_ids:
        version = table.transaction_version(app_id)
        if version is not None:
            found[app_id] = version
    return found


@dataclass(frozen=True)
class DeltaStore:
    """The Delta tables under one ``root`` (a path or an s3:// / gs:// / az:// URI)."""

    root: str
    storage_options: Mapping[str, str] = field(default_factory=dict)

    def uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _options(self) -> dict[str, str] | None:
        return dict(self.storage_options) or None

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self._options())

    def open(self, table: str, version: int | None = None) -> DeltaTable:
        """The table at ``version`` (default: the latest); raises ``TableNotFoundError``."""
        return DeltaTable(self.uri(table), version=version, storage_options=self._options())

    def open_or_create(
        self,
        table: str,
        schema: pa.Schema,
        *,
        partition_by: list[str] | None = None,
        name: str | None = None,
    ) -> DeltaTable:
        """The table, created empty with ``schema`` when missing (safe against a concurrent
        create: module docstring)."""
        if self.exists(table):
            return self.open(table)
        try:
            return DeltaTable.create(
                self.uri(table),
                schema,
                mode="ignore",
                partition_by=partition_by,
                name=name,
                storage_options=self._options(),
                commit_properties=_properties(retries=0),
            )
        except CommitFailedError:
            if self.exists(table):  # another process created it first
                return self.open(table)
            raise

    def append_serialized(
        self,
        table: str,
        schema: pa.Schema,
        build: Callable[[DeltaTable], Append | None],
        *,
        attempts: int = 20,
    ) -> int | None:
        """Commit ``build(snapshot)`` on that very snapshot of the table (created when missing),
        building again from the newer one whenever another writer committed first; returns
        the new version, or None when ``build`` has nothing to write."""
        failure: CommitFailedError | None = None
        for _ in range(attempts):
            snapshot = self.open_or_create(table, schema)
            pending = build(snapshot)
            if pending is None:
                return None
            try:
                return commit(
                    snapshot,
                    pending.rows,
                    transactions=pending.transactions,
                    metadata=pending.metadata,
                    retries=0,
                )
            except CommitFailedError as exc:
                failure = exc
        raise RuntimeError(
            f"no commit to {self.uri(table)} in {attempts} attempts: other writers kept "
            "committing first"
        ) from failure

    def version(self, table: str) -> int | None:
        return self.open(table).version() if self.exists(table) else None

    def row_count(self, table: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read)."""
        if not self.exists(table):
            return 0
        actions = pl.DataFrame(self.open(table).get_add_actions(flatten=True))
        return int(actions["num_records"].sum()) if actions.height else 0

    def read(self, table: str, version: int | None = None) -> pl.DataFrame:
        return pl.read_delta(self.uri(table), version=version, storage_options=self._options())

    def scan(self, table: str, version: int | None = None) -> pl.LazyFrame:
        """The table as a lazy frame: filters on partition columns skip other partitions."""
        return pl.scan_delta(self.uri(table), version=version, storage_options=self._options())

    def overwrite(
        self, table: str, frame: pl.DataFrame, metadata: Mapping[str, Any] | None = None
    ) -> int:
        """Replace the table's content in one commit (older versions stay readable); returns
        the version."""
        write_deltalake(
            self.uri(table),
            _arrow(frame),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=self._options(),
            commit_properties=_properties(metadata=metadata),
        )
        return self.open(table).version()

    def replace_where(
        self,
        table: str,
        frame: pl.DataFrame,
        predicate: str,
        *,
        partition_by: list[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Replace the rows matching the SQL ``predicate`` with ``frame`` in one commit (the
        other rows are untouched); creates the table (partitioned by ``partition_by``) on first
        use; new columns are merged into the schema. Returns the new version."""
        existing = self.exists(table)
        write_deltalake(
            self.uri(table),
            _arrow(frame),
            mode="overwrite",
            predicate=predicate if existing else None,
            partition_by=None if existing else partition_by,
            schema_mode="merge" if existing else None,
            storage_options=self._options(),
            commit_properties=_properties(metadata=metadata),
        )
        return self.open(table).version()

    def replace_range(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        partition_column: str,
        first: date,
        last: date,
        metadata: Mapping[str, Any] | None = None,
    ) -> int:
        """Replace the date partitions ``first..last`` (inclusive) of a table partitioned by
        ``partition_column`` with ``frame``; other partitions are untouched."""
        bad = frame.filter(
            (pl.col(partition_column) < first) | (pl.col(partition_column) > last)
        ).height
        if bad:
            raise ValueError(
                f"{table}: {bad} rows fall outside the partitions {first}..{last} being replaced"
            )
        predicate = (
            f"{partition_column} >= '{first.isoformat()}' "
            f"AND {partition_column} <= '{last.isoformat()}'"
        )
        return self.replace_where(
            table, frame, predicate, partition_by=[partition_column], metadata=metadata
        )
