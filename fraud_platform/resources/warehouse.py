"""The DuckDB warehouse dbt builds silver and gold into."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg
import duckdb
import polars as pl


class WarehouseResource(dg.ConfigurableResource):
    """Read-only access to the dbt-built tables (``<layer schema>.<model>``)."""

    path: str

    def dbt_env(
        self, delta_root: str, storage_options: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Environment the dbt project reads its warehouse path and bronze location from.

        dbt-duckdb's ``delta`` plugin opens bronze with ``DeltaTable(path)``; the object store
        behind it (delta-rs) also reads its options from the environment under their upper-case
        names (``aws_endpoint_url`` -> ``AWS_ENDPOINT_URL``), so the Delta storage options are
        handed over that way rather than written into the dbt project."""
        return {
            "FRAUD_PLATFORM_WAREHOUSE": self.path,
            "FRAUD_PLATFORM_DELTA_ROOT_LOCAL": delta_root,
            **{key.upper(): value for key, value in (storage_options or {}).items()},
        }

    def query(self, sql: str) -> pl.DataFrame:
        """Run ``sql``; timestamps come back in ``UTC`` (DuckDB says ``Etc/UTC``)."""
        with duckdb.connect(self.path, read_only=True) as connection:
            frame = connection.sql(sql).pl()
        return frame.with_columns(
            pl.col(name).dt.convert_time_zone("UTC")
            for name, dtype in frame.schema.items()
            if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
        )

    def table(self, name: str, schema: str = "silver") -> pl.DataFrame:
        return self.query(f'select * from "{schema}"."{name}"')
