"""dbt-duckdb: bronze (Delta) -> staging -> intermediate -> silver -> gold. dbt tests are asset checks."""

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliResource, DbtProject, dbt_assets

from fraud_platform import names
from fraud_platform.defs.transform.project import (
    dbt_project,
    keep_partial_parse,
    remove_run_target,
)
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

# dbt tests that the ingestion runs of the arrivals sensor leave out (names.SKIPPED_ON_ARRIVAL):
# every event was validated against its contract on the way into bronze (required fields, enum
# values), so these re-check the contract, ~0.2 s apiece for a few rows on 2 busy cores (three
# Dagster events each). ``unique`` (keys after the incremental merges) and ``relationships``
# still run on every arrival, over the newly ingested rows (``tests_ingested_after_by_table``);
# scheduled, UI and CI runs (tests/dbt) run them all over whole models.
SKIPPED_ON_ARRIVAL_TESTS = frozenset({"not_null", "accepted_values"})
# Tests of the intermediate views are left out of arrival runs too: a view is recomputed by each
# test over the whole history (a window over all of bronze or silver, whatever rows the test
# keeps), so their cost grew with history (5.9 s of 32 s of dbt at 180 days for
# int_user_home_countries_daily's key). The keys they check are those of the silver and gold
# tables built from them, which are tested on every arrival.
SKIPPED_ON_ARRIVAL_LAYERS = frozenset({"intermediate"})
TESTS_INGESTED_AFTER = "FRAUD_PLATFORM_TESTS_INGESTED_AFTER"  # macros/test_scope.sql
TESTS_INGESTED_AFTER_BY_TABLE = "FRAUD_PLATFORM_TESTS_INGESTED_AFTER_BY_TABLE"  # the same
# The incremental silver tables the arrivals feed; each absorbs bronze rows in ingestion order.
STAMPED_TABLES = ("fct_transactions", "fct_account_events", "fct_labels")


def tests_ingested_after_by_table(warehouse: WarehouseResource) -> dict[str, str] | None:
    """The newest ``ingested_at`` each stamped silver table had absorbed before this run: the
    rows of its topic ingested after it are the ones this run adds (or that a failed run left).
    None when a table is missing or empty, or the warehouse file is not there yet (a first
    build: everything is new)."""
    if not Path(warehouse.path).exists():
        return None
    present = warehouse.query(
        "select table_name from duckdb_tables() where schema_name = 'silver'"
    )["table_name"].to_list()
    if not set(STAMPED_TABLES) <= set(present):
        return None
    newest = " union all ".join(
        f"select '{table}' as stamped, cast(max(ingested_at) as varchar) as newest "
        f"from silver.{table}"
        for table in STAMPED_TABLES
    )
    found = dict(warehouse.query(newest).iter_rows())
    if any(found.get(table) is None for table in STAMPED_TABLES):
        return None
    return {table: str(found[table]) for table in STAMPED_TABLES}


class LayeredTranslator(DagsterDbtTranslator):
    """Keys are ``[layer, model]`` (the layer is the model's schema); bronze sources map onto the
    ingestion assets' keys, which draws the Kafka -> bronze -> dbt lineage."""

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> dg.AssetKey:
        if dbt_resource_props["resource_type"] == "source":
            return dg.AssetKey([dbt_resource_props["source_name"], dbt_resource_props["name"]])
        return dg.AssetKey([dbt_resource_props["config"]["schema"], dbt_resource_props["name"]])

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        return "transform"

    def get_asset_check_spec(
        self,
        asset_spec: dg.AssetSpec,
        manifest: Mapping[str, Any],
        unique_id: str,
        project: DbtProject | None,
    ) -> dg.AssetCheckSpec | None:
        spec = super().get_asset_check_spec(asset_spec, manifest, unique_id, project)
        node = manifest["nodes"][unique_id]
        test = node.get("test_metadata") or {}
        model = manifest["nodes"].get(node.get("attached_node") or "", {})
        layer = (model.get("config") or {}).get("schema")
        if spec is not None and (
            test.get("name") in SKIPPED_ON_ARRIVAL_TESTS or layer in SKIPPED_ON_ARRIVAL_LAYERS
        ):
            return spec.with_metadata({**spec.metadata, names.SKIPPED_ON_ARRIVAL: True})
        return spec


@dbt_assets(manifest=dbt_project.manifest_path, dagster_dbt_translator=LayeredTranslator())
def fraud_dbt_models(
    context: dg.AssetExecutionContext,
    dbt: DbtCliResource,
    warehouse: WarehouseResource,
    delta: dg.ResourceParam[DeltaStore],
) -> Iterator[Any]:
    """Silver and gold tables built by ``dbt build``, streamed as they finish."""
    # dbt's profile and sources read these
    os.environ.update(warehouse.dbt_env(delta.root, delta.storage_options))
    by_table = (
        tests_ingested_after_by_table(warehouse) if names.ARRIVALS_TAG in context.run.tags else None
    )
    if by_table is None:  # whole models (the variables may be set by an earlier run)
        os.environ.pop(TESTS_INGESTED_AFTER, None)
        os.environ.pop(TESTS_INGESTED_AFTER_BY_TABLE, None)
    else:
        # each table's own instant: a quiet topic's older one would make the other topics'
        # tests check every row ingested since (all of a set-up's history, in a benchmark)
        os.environ[TESTS_INGESTED_AFTER] = min(by_table.values())
        os.environ[TESTS_INGESTED_AFTER_BY_TABLE] = json.dumps(by_table)
        context.log.info(f"dbt tests check the rows ingested after {by_table}")
    # dbt's unit tests check the SQL against fixed rows, not the data: CI runs them
    # (tests/dbt), every ingestion run would only pay for them (dbt's advice for production)
    invocation = dbt.cli(["build", "--exclude-resource-type", "unit_test"], context=context)
    yield from invocation.stream()
    keep_partial_parse(invocation.target_path, dbt_project)
    remove_run_target(invocation.target_path, dbt_project)
