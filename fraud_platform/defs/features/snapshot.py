"""The online snapshot: the newest feature values of each entity, from the offline store's
Delta tables (``assets.py``) to Redis for serving."""

import time
from dataclasses import asdict

import dagster as dg

from fraud_platform.defs.features.assets import GROUP, feature_table
from fraud_platform.defs.features.sharded import FEATURE_DATE
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.online.snapshot import GroupSnapshot, snapshot_group
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import RedisResource


class OnlineSnapshotConfig(dg.Config):
    max_staleness_minutes: float = 15.0


class FeatureSnapshotConfig(dg.Config):
    """``full``: rewrite every entity's newest row instead of only the changed ones (also done
    for a group without a checkpoint in the online store, e.g. after a flush or a new layout)."""

    full: bool = False


@dg.asset(
    key=["online", "feature_snapshot"],
    group_name=GROUP,
    deps=[dg.AssetKey(["features", g.versioned_name]) for g in FEATURE_GROUPS],
    kinds={"redis"},
)
def feature_snapshot(
    context: dg.AssetExecutionContext,
    delta: dg.ResourceParam[DeltaStore],
    redis: RedisResource,
    config: FeatureSnapshotConfig,
) -> dg.MaterializeResult:
    """The latest value of every feature per entity, written to Redis for serving: only the
    entities whose newest row changed since the last snapshot, read from the partitions written
    since (``lib/features/online/snapshot.py``); every entity with ``full``."""
    client = redis.client()
    started = time.perf_counter()
    per_group: dict[str, GroupSnapshot] = {}
    for group in FEATURE_GROUPS:
        done = snapshot_group(
            client,
            delta,
            feature_table(group),
            group,
            partition_column=FEATURE_DATE,
            full=config.full,
        )
        per_group[group.versioned_name] = done
        context.log.info(
            f"online: {group.versioned_name} {done.mode} ({done.reason}): {done.rows_read} rows "
            f"read, {done.entities_written} entities written, {done.rows_stored} rows stored"
        )
    elapsed = time.perf_counter() - started
    total = sum(done.rows_stored for done in per_group.values())
    return dg.MaterializeResult(
        metadata={
            "keys_written": total,
            "keys_per_group": dg.MetadataValue.json(
                {name: done.rows_stored for name, done in per_group.items()}
            ),
            "rows_read": sum(done.rows_read for done in per_group.values()),
            "entities_written": sum(done.entities_written for done in per_group.values()),
            "modes": dg.MetadataValue.json({n: d.mode for n, d in per_group.items()}),
            "per_group": dg.MetadataValue.json({n: asdict(d) for n, d in per_group.items()}),
            "snapshot_seconds": round(elapsed, 3),
            "written_at_unix": time.time(),
            "redis_url": redis.url.split("@")[-1],
        }
    )


@dg.asset_check(asset=feature_snapshot, description="The online store was refreshed recently.")
def feature_snapshot_is_fresh(
    context: dg.AssetCheckExecutionContext, config: OnlineSnapshotConfig
) -> dg.AssetCheckResult:
    event = context.instance.get_latest_materialization_event(
        dg.AssetKey(["online", "feature_snapshot"])
    )
    if event is None:
        return dg.AssetCheckResult(passed=False, metadata={"reason": "never materialized"})
    age_min = (time.time() - event.timestamp) / 60
    return dg.AssetCheckResult(
        passed=age_min <= config.max_staleness_minutes,
        metadata={"age_minutes": round(age_min, 2), "limit_minutes": config.max_staleness_minutes},
    )


# A module holding a Definitions object contributes only that object: put everything in it.
defs = dg.Definitions(assets=[feature_snapshot], asset_checks=[feature_snapshot_is_fresh])
