"""Delta Lake storage: local folder or object store, one root for every table."""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg
import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError


class DeltaResource(dg.ConfigurableResource):
    """Where the Delta tables live. ``root`` is a path or an s3:// / gs:// / az:// URI."""

    root: str
    storage_options: dict[str, str] = {}

    def uri(self, table: str) -> str:
        return f"{self.root.rstrip('/')}/{table}"

    def _options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def table(self, table: str, version: int | None = None) -> DeltaTable:
        return DeltaTable(self.uri(table), version=version, storage_options=self._options())

    def exists(self, table: str) -> bool:
        try:
            self.table(table)
        except TableNotFoundError:
            return False
        return True

    def version(self, table: str) -> int | None:
        return self.table(table).version() if self.exists(table) else None

    def row_count(self, table: str) -> int:
        """Rows in the current version, from the Delta log's file statistics (no data read)."""
        if not self.exists(table):
            return 0
        actions = pl.DataFrame(self.table(table).get_add_actions(flatten=True))
        return int(actions["num_records"].sum()) if actions.height else 0

    def read(self, table: str, version: int | None = None) -> pl.DataFrame:
        return pl.read_delta(self.uri(table), version=version, storage_options=self._options())

    def overwrite(
        self, table: str, frame: pl.DataFrame, metadata: dict[str, Any] | None = None
    ) -> int:
        """Replace the table's content in one commit (older versions stay readable); returns the version."""

        write_deltalake(
            self.uri(table),
            frame.to_arrow(),
            mode="overwrite",
            schema_mode="overwrite",
            storage_options=self._options(),
            commit_properties=CommitProperties(
                custom_metadata={k: str(v) for k, v in (metadata or {}).items()}
            ),
        )
        return self.table(table).version()

    def replace_where(
        self,
        table: str,
        frame: pl.DataFrame,
        predicate: str,
        *,
        partition_by: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Replace the rows matching the SQL ``predicate`` with ``frame`` in one commit (the
        other rows are untouched); creates the table (partitioned by ``partition_by``) on first
        use; new columns are merged into the schema. Returns the new version."""
        commit = CommitProperties(custom_metadata={k: str(v) for k, v in (metadata or {}).items()})
        existing = self.exists(table)
        write_deltalake(
            self.uri(table),
            frame.to_arrow(),
            mode="overwrite",
            predicate=predicate if existing else None,
            partition_by=None if existing else partition_by,
            schema_mode="merge" if existing else None,
            storage_options=self._options(),
            commit_properties=commit,
        )
        return self.table(table).version()

    def replace_range(
        self,
        table: str,
        frame: pl.DataFrame,
        *,
        partition_column: str,
        first: date,
        last: date,
        metadata: dict[str, Any] | None = None,
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
