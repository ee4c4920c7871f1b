"""The sharded feature backfill: feature partitions split by day AND entity-hash shard.

With ``FRAUD_PLATFORM_FEATURE_SHARDS`` = N > 1, each feature group gets an asset
``features_sharded/<group>`` partitioned date x shard (``defs/partitions.py``): a backfill over
it launches one run per (day, shard), so it fans out to as many run workers as the deployment's
run launcher has (Kubernetes or Celery in production). Each run computes its shard's rows with
the same function as the daily asset (``compute_feature_group_between`` over ``shard_source``:
the events of the shard's entities only) and writes them to its own small Delta table (one per
day and shard, so concurrent runs never commit to the same table). Then ``features/<group>`` for
the range, run with config ``from_shards: true``, writes the union of the shards (checked
complete) into the offline store as one range replacement, and the online snapshot follows.

Why a separate path and not multi-partitions on ``features/<group>`` itself: its partitions are
shared by the ingestion sensor's refresh runs, the schedules, the online snapshot and the
training set (all keyed by day), and one Delta table cannot take N concurrent range
replacements of the same days. With N = 1 (the default) nothing here is defined.
"""

import time
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.defs.partitions import (
    DATE_DIMENSION,
    FEATURE_SHARDS,
    SHARD_DIMENSION,
    sharded_feature_partitions,
)
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group_between
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.shards import shard_source
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

SHARDED_GROUP = "features_sharded"
SHARDED_BACKFILL_JOB = "sharded_feature_backfill"
FEATURE_DATE = names.FEATURE_DATE


def shard_table(group: FeatureGroup, shards: int, shard: int, day: date) -> str:
    """The Delta table of one (day, shard) of a group, for ``shards`` shards."""
    return f"features_shards/{group.versioned_name}/of{shards}/shard{shard}/{day.isoformat()}"


class MissingShards(RuntimeError):
    """The union was asked for before every (day, shard) of the range was computed."""


def union_of_shards(
    delta: DeltaStore, group: FeatureGroup, shards: int, first: date, last: date
) -> pl.DataFrame:
    """Every shard's rows of days ``first..last``, ordered as ``compute_feature_group`` orders
    them; raises ``MissingShards`` naming the (day, shard) pairs not computed yet."""
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    tables = [(day, k, shard_table(group, shards, k, day)) for day in days for k in range(shards)]
    missing = [f"{day}/{k}" for day, k, table in tables if not delta.exists(table)]
    if missing:
        raise MissingShards(
            f"{group.versioned_name}: {len(missing)} (day/shard) partitions of "
            f"{SHARDED_GROUP}/{group.versioned_name} not materialized, e.g. {missing[:5]}: "
            f"run the {SHARDED_BACKFILL_JOB} backfill for {first}..{last} first"
        )
    frames = [delta.read(table) for _, _, table in tables]
    return pl.concat(frames, how="vertical_relaxed").sort(FEATURE_TIME, ENTITY_KEY)


def sharded_group_definitions(group: FeatureGroup, shards: int) -> dg.Definitions:
    @dg.asset(
        name=group.versioned_name,
        key_prefix=[SHARDED_GROUP],
        group_name=SHARDED_GROUP,
        deps=[dg.AssetKey(["silver", group.source])],
        description=(
            f"{group.versioned_name} computed per day and entity-hash shard ({shards} shards), "
            "the input of features/<group> run with from_shards: true."
        ),
        kinds={"polars", "delta"},
        partitions_def=sharded_feature_partitions(shards),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        delta: dg.ResourceParam[DeltaStore],
    ) -> dg.MaterializeResult:
        started = time.perf_counter()
        key = context.partition_key.keys_by_dimension  # type: ignore[attr-defined]
        day, shard = date.fromisoformat(key[DATE_DIMENSION]), int(key[SHARD_DIMENSION])
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        source = warehouse.query(
            f'select * from silver."{group.source}" '
            f"where \"{group.event_time_column}\" < '{end.isoformat()}'"
        )
        rows = compute_feature_group_between(
            group, shard_source(group, source, shard, shards), start, end
        ).with_columns(pl.col(FEATURE_TIME).dt.date().alias(FEATURE_DATE))
        version = delta.overwrite(shard_table(group, shards, shard, day), rows)
        return dg.MaterializeResult(
            metadata={
                "rows": rows.height,
                "entities": rows[ENTITY_KEY].n_unique(),
                "source_events_read": source.height,
                "delta_version": version,
                "compute_seconds": round(time.perf_counter() - started, 3),
            }
        )

    return dg.Definitions(assets=[_asset])


def sharded_definitions(shards: int) -> dg.Definitions:
    """The shard assets of every group and the backfill job over them (nothing for 1 shard)."""
    if shards <= 1:
        return dg.Definitions()
    job = dg.define_asset_job(
        SHARDED_BACKFILL_JOB,
        selection=dg.AssetSelection.groups(SHARDED_GROUP),
        description="Compute feature rows per (day, entity-hash shard): one run per partition.",
    )
    return dg.Definitions.merge(
        *[sharded_group_definitions(g, shards) for g in FEATURE_GROUPS],
        dg.Definitions(jobs=[job]),
    )


defs = sharded_definitions(FEATURE_SHARDS)
