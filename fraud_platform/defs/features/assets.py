"""Feature groups (offline store, Delta).

One asset per declared feature group, generated from the registry, all computed by one
multi-asset step (``feature_groups_asset``); the online snapshot (``snapshot.py``) reads the same
tables, so offline and online values come from one computation.
"""

import time
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.defs.features.changed import (
    Mark,
    mark_after_range,
    recorded_mark,
    source_events_of,
    survey,
    unchanged_rows,
)
from fraud_platform.defs.features.sharded import FEATURE_DATE, union_of_shards
from fraud_platform.defs.features.state import checkpoint_boundaries, read_state, write_states
from fraud_platform.defs.partitions import (
    FEATURE_PARTITIONS,
    FEATURE_SHARDS,
    check_within_partitions,
)
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.incremental import (
    compute_lifetime,
    compute_rows_from,
    is_incremental,
    lifetime_state,
    longest_window,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

# single-run backfills are a deliberate choice (a range of days is one polars computation)
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

GROUP = "features"


class FeaturePartitionConfig(dg.Config):
    """``from_shards``: write the union of the sharded backfill's (day, shard) rows for the
    range instead of computing it here (``sharded.py``; needs FRAUD_PLATFORM_FEATURE_SHARDS > 1)."""

    from_shards: bool = False


def feature_table(group: FeatureGroup) -> str:
    return names.feature_table(group.versioned_name)


def definition_markdown(group: FeatureGroup) -> str:
    lines = [
        f"**{group.versioned_name}**: {group.description}",
        "",
        f"entity `{group.entity.name}` ({', '.join(group.entity.join_keys)}), "
        f"source `{group.source}`, ttl {group.ttl}, owner {group.owner}",
        "",
        "| feature | aggregation | window | filter | dtype |",
        "|---|---|---|---|---|",
    ]
    for f in group.features:
        where = " ".join(map(str, f.where)) if f.where else ""
        lines.append(
            f"| {f.name} | {f.function}({f.column or '*'}) | {f.window or 'lifetime'} | {where} | {f.dtype} |"
        )
    return "\n".join(lines)


def _utc(value: datetime) -> datetime:
    return datetime.fromtimestamp(value.timestamp(), tz=UTC)


def _source_events(
    warehouse: WarehouseResource,
    group: FeatureGroup,
    end: datetime,
    since: datetime | None = None,
) -> pl.DataFrame:
    """The source events dated before ``end`` (and from ``since`` on, when given)."""
    column = f'"{group.event_time_column}"'
    where = f"{column} < '{end.isoformat()}'"
    if since is not None:
        where += f" and {column} >= '{since.isoformat()}'"
    return warehouse.query(f'select * from silver."{group.source}" where {where}')


CHUNK = timedelta(days=32)  # a long backfill is computed a month at a time: bounded memory


def compute_range(
    warehouse: WarehouseResource,
    delta: DeltaStore,
    group: FeatureGroup,
    start: datetime,
    end: datetime,
) -> tuple[pl.DataFrame, int, str, Mark | None]:
    """The rows of ``start <= feature_time < end``, the source events read, how, and the mark
    the write of the rows may record (``changed.py``).

    From a lifetime checkpoint at ``start`` when one holds (``state.py``), else from the whole
    history before ``start``; then chunk by chunk, each from its lookback and the state the
    previous chunk left (``incremental.compute_rows_from``), so memory follows the chunk, not
    the range. When the table's mark vouches for every partition of the range, only the
    entities with events ingested since are recomputed, the other rows are kept. Either way the
    checkpoints of the range's day boundaries are rewritten."""
    if not is_incremental(group):
        source = _source_events(warehouse, group, end)
        rows = compute_feature_group(group, source, wanted_from=start)
        rows = rows.filter(pl.col(FEATURE_TIME) >= start)
        return rows, source.height, "whole history", None
    previous = recorded_mark(delta, feature_table(group))
    last = _last_day(end)
    boundaries = checkpoint_boundaries(start, end)
    seen = survey(warehouse, group, start, boundaries, previous)  # before any event is read
    mark = mark_after_range(previous, seen, start, last)
    state = read_state(delta, warehouse, group, start, seen.events_before[0])
    if state is None:  # the whole history, read once: the state at start, then the range
        history = _source_events(warehouse, group, end)
        before = history.filter(pl.col(group.event_time_column) < start)
        state = lifetime_state(group, compute_lifetime(group, before))
        rows, _ = _every_entity_rows(warehouse, group, state, start, end, history)
        how, read = "whole history", history.height
    elif (
        mark is not None
        and previous is not None
        and previous.partitions_through >= last
        and end - start <= CHUNK
    ):
        rows, read = _changed_entities_rows(warehouse, delta, group, previous, state, start, end)
        how = "changed entities: lookback and lifetime state"
    else:
        rows, read = _every_entity_rows(warehouse, group, state, start, end)
        how = "lookback and lifetime state"
    write_states(delta, warehouse, group, rows, state, start, end, seen.events_before[1:])
    return rows, read, how, mark


def _last_day(end: datetime) -> date:
    return (end - timedelta(microseconds=1)).date()


def _every_entity_rows(
    warehouse: WarehouseResource,
    group: FeatureGroup,
    state: pl.DataFrame,
    start: datetime,
    end: datetime,
    history: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, int]:
    """Every entity's rows of the range, a chunk at a time, and the source events read (from
    the warehouse, or taken from ``history`` when it is already in memory)."""
    parts, chunk_start, read = [], start, 0
    at = pl.col(group.event_time_column)
    while chunk_start < end:
        chunk_end = min(chunk_start + CHUNK, end)
        since = chunk_start - longest_window(group)
        if history is None:
            source = _source_events(warehouse, group, chunk_end, since=since)
        else:
            source = history.filter((at >= since) & (at < chunk_end))
        rows = compute_rows_from(group, source, chunk_start, chunk_end, state)
        state = lifetime_state(group, rows, previous=state)
        parts.append(rows)
        read += source.height
        chunk_start = chunk_end
    return (pl.concat(parts) if len(parts) > 1 else parts[0]), read


def _changed_entities_rows(
    warehouse: WarehouseResource,
    delta: DeltaStore,
    group: FeatureGroup,
    previous: Mark,
    state: pl.DataFrame,
    start: datetime,
    end: datetime,
) -> tuple[pl.DataFrame, int]:
    """The range's rows of the entities with events ingested after ``previous`` recomputed, the
    stored rows of the others kept, and the source events read."""
    source = source_events_of(warehouse, group, previous, start - longest_window(group), end)
    rows = compute_rows_from(group, source, start, end, state)
    kept = unchanged_rows(
        delta, feature_table(group), group, source, FEATURE_DATE, start.date(), _last_day(end)
    )
    kept = kept.select([pl.col(name).cast(dtype) for name, dtype in rows.schema.items()])
    return pl.concat([kept, rows]).sort(FEATURE_TIME, ENTITY_KEY), source.height


def history_partition_range(warehouse: WarehouseResource) -> tuple[str, str] | None:
    """First and last daily partition holding a source event of any feature group, or None when
    the sources are empty; events outside the partitions raise ``EventsOutsidePartitions``."""
    sources = sorted({(g.source, g.event_time_column) for g in FEATURE_GROUPS})
    union = " union all ".join(
        f'select min("{column}") as first, max("{column}") as last from silver."{source}"'
        for source, column in sources
    )
    bounds = warehouse.query(f"select min(first) as first, max(last) as last from ({union})")
    first, last = bounds.row(0)
    if first is None:
        return None
    check_within_partitions(_utc(first).date(), _utc(last).date())
    first_key = _utc(first).date().isoformat()
    return first_key, max(first_key, _utc(last).date().isoformat())


def null_key_check(group: FeatureGroup, written: pl.DataFrame) -> dg.AssetCheckResult:
    """Every row the run wrote (its partitions; the others were checked by the runs that wrote
    them: reading the whole table made the check grow with history) names its entity and the
    time its values became known."""
    rows = written.select(ENTITY_KEY, FEATURE_TIME)
    nulls = rows.null_count().sum_horizontal().item()
    return dg.AssetCheckResult(
        asset_key=asset_key(group),
        check_name=f"{group.name}_has_no_null_keys",
        passed=nulls == 0,
        metadata={"null_keys": nulls, "rows": rows.height},
    )


def asset_key(group: FeatureGroup) -> dg.AssetKey:
    return dg.AssetKey(["features", group.versioned_name])


def _group_spec(group: FeatureGroup) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=asset_key(group),
        group_name=GROUP,
        deps=[dg.AssetKey(["silver", group.source])],
        description=(
            f"{group.description} One row per {group.entity.name} and source event, in daily "
            "partitions by feature_time; a range of partitions is computed in one step."
        ),
        tags={"entity": group.entity.name, "owner": group.owner},
        kinds={"polars", "delta"},
        partitions_def=FEATURE_PARTITIONS,
    )


def _null_key_check_spec(group: FeatureGroup) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        f"{group.name}_has_no_null_keys",
        asset=asset_key(group),
        description="Every row written names its entity and the time its values became known.",
    )


def _materialize_group(
    context: dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    delta: DeltaStore,
    config: FeaturePartitionConfig,
    group: FeatureGroup,
) -> dg.MaterializeResult:
    """Compute and write one group's partitions of the run's range (module docstring)."""
    started = time.perf_counter()
    window = context.partition_time_window
    start, end = _utc(window.start), _utc(window.end)
    first, last = start.date(), (end - timedelta(microseconds=1)).date()
    if config.from_shards:
        if FEATURE_SHARDS <= 1:
            raise ValueError("from_shards needs FRAUD_PLATFORM_FEATURE_SHARDS above 1")
        source_events, how, mark = 0, "union of the shard runs", None  # they read the sources;
        # no mark: the next range recomputes every entity (changed.py)
        rows = union_of_shards(delta, group, FEATURE_SHARDS, first, last)
    else:
        rows, source_events, how, mark = compute_range(warehouse, delta, group, start, end)
        rows = rows.with_columns(pl.col(FEATURE_TIME).dt.date().alias(FEATURE_DATE))
    version = delta.replace_range(
        feature_table(group),
        rows,
        partition_column=FEATURE_DATE,
        first=first,
        last=last,
        metadata={
            "feature_group": group.versioned_name,
            "partitions": f"{first}..{last}",
            **(mark.metadata() if mark is not None else {}),
        },
    )
    elapsed = time.perf_counter() - started
    return dg.MaterializeResult(
        asset_key=asset_key(group),
        metadata={
            "dagster/row_count": delta.row_count(feature_table(group)),
            "rows_in_partitions": rows.height,
            "partition_range": f"{first}..{last}",
            "source_events_read": source_events,
            "computed_from": how,
            "entities": rows[ENTITY_KEY].n_unique(),
            "delta_version": version,
            "delta_uri": delta.uri(feature_table(group)),
            "latest_feature_time": str(rows[FEATURE_TIME].max()) if rows.height else "",
            "definition": dg.MetadataValue.md(definition_markdown(group)),
            "compute_seconds": round(elapsed, 3),
        },
        check_results=[null_key_check(group, rows)],
    )


class FeatureGroupsFailed(RuntimeError):
    """Some groups of a step failed; the others were written (and recorded) all the same."""


def feature_groups_asset(groups: list[FeatureGroup], name: str) -> dg.AssetsDefinition:
    """The offline-store assets of ``groups`` (daily partitions) with their key checks, computed
    in ONE step: each group stays its own asset in the graph and the catalog (and can be
    materialized alone: the step computes the selected ones), but a run over every group pays
    one step's Dagster events and checks instead of one per group, which on the default SQLite
    instance cost more than the computations of a micro-batch (README, refresh scaling). A
    group that fails does not stop the others; the step fails after them, naming it."""

    @dg.multi_asset(
        name=name,
        specs=[_group_spec(group) for group in groups],
        check_specs=[_null_key_check_spec(group) for group in groups],
        can_subset=True,
        partitions_def=FEATURE_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _assets(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        delta: dg.ResourceParam[DeltaStore],
        config: FeaturePartitionConfig,
    ) -> Iterator[dg.MaterializeResult]:
        selected = context.selected_asset_keys
        failed: dict[str, BaseException] = {}
        done: list[str] = []
        for group in groups:
            if asset_key(group) not in selected:
                continue
            try:
                result = _materialize_group(context, warehouse, delta, config, group)
            except Exception as exc:  # the other groups still run; raised below
                context.log.exception(f"{group.versioned_name} failed")
                failed[group.versioned_name] = exc
                continue
            metadata = result.metadata or {}
            done.append(
                f"{group.versioned_name}: {metadata['rows_in_partitions']} rows from "
                f"{metadata['source_events_read']} source events ({metadata['computed_from']}) "
                f"in {metadata['compute_seconds']:.1f}s"
            )
            yield result
        if done:  # one log record for the step (each is a stored event)
            context.log.info("\n".join(done))
        if len(failed) == 1:  # as a step of its own would have
            raise next(iter(failed.values()))
        if failed:
            first = next(iter(failed.values()))
            raise FeatureGroupsFailed(
                f"feature groups failed: {', '.join(failed)} (first: {first!r})"
            ) from first

    return _assets


def feature_group_definitions(group: FeatureGroup) -> dg.Definitions:
    """One group's asset on its own (op ``features__<group>``), e.g. for a test."""
    return dg.Definitions(
        assets=[feature_groups_asset([group], name=f"features__{group.versioned_name}")]
    )


# A module holding a Definitions object contributes only that object: put everything in it.
defs = dg.Definitions(assets=[feature_groups_asset(list(FEATURE_GROUPS), name="feature_groups")])
