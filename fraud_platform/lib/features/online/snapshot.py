"""The batch path's online snapshot of one feature group, incremental by default.

What the store holds after a snapshot is defined by the full snapshot: the rows of every entity
of the offline table the online history keeps (``history.online_history``: the rows a lookup
up to an hour after the entity's newest row reads; for a group without windows as of the lookup
just the newest row), written through the compare-on-write script (``writer.py``). The
incremental snapshot writes the same rows, but only for the entities whose rows (the newest
row, for a group without such windows) differ from the ones the previous snapshot read; for
every other entity the full snapshot's write would repeat rows the store already holds (same
feature_time, same writer_version 0: a no-op).

The checkpoint is the Delta version (and table id) the previous snapshot read, kept per group
in a hash in the online store itself (``checkpoint_key``): a store that was flushed, or a new
layout version (a new key prefix), has no checkpoint and gets a full snapshot. Between the
checkpoint's version and the current one:

1. the changed partitions P are those of files added or removed (the two versions' file lists;
   the feature assets replace whole daily partitions);
2. the rows of P are read at both versions; rows of partitions outside P are the same at both;
3. an entity's newest row is the newest of its rows in P and in the partitions after min(P)
   (a row of an earlier partition is older than every row of P); those later partitions are read
   only for the entities seen in P (with the usual stale range, D..today, there are none);
4. entities whose newest row (as encoded for Redis) differs are written; an entity whose rows in
   P all disappeared has its newest row looked up in the partitions before min(P), newest first;
5. for a group with windows as of the lookup, the entities with any differing row: the rows
   ``online_history`` keeps from each one's first differing row on (a late event changes the
   totals of every later row; the older rows are unchanged and in the store already). An entity
   whose rows in P all disappeared has its newest row looked up as in 4.

The checkpoint is saved after the writes: a crash in between repeats the same writes next time.
A checkpoint whose version can no longer be read (its log entries or, after a VACUUM, its files
are gone) gives a full snapshot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date

import polars as pl
import redis
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from fraud_platform.lib.features.compute import latest_per_entity
from fraud_platform.lib.features.online.history import (
    online_history,
    retained_windows,
)
from fraud_platform.lib.features.online.layout import (
    ONLINE_LAYOUT_VERSION,
    encode_rows,
)
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.shared import hosted, storage_host
from fraud_platform.lib.features.windows import stored_group
from fraud_platform.lib.storage.delta import DeltaStore


def checkpoint_key() -> str:
    """The hash of snapshot checkpoints: field = versioned group name, value = JSON."""
    return f"fp:{ONLINE_LAYOUT_VERSION}:snapshot_checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """The offline table (Delta table id) and version the last snapshot of a group wrote."""

    table_id: str
    version: int


def read_checkpoint(client: redis.Redis, group: FeatureGroup) -> Checkpoint | None:
    raw = client.hget(checkpoint_key(), group.versioned_name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return Checkpoint(table_id=str(value["table_id"]), version=int(value["version"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{checkpoint_key()} field {group.versioned_name} is not a checkpoint: {raw!r}"
        ) from exc


def save_checkpoint(client: redis.Redis, group: FeatureGroup, checkpoint: Checkpoint) -> None:
    client.hset(checkpoint_key(), group.versioned_name, json.dumps(asdict(checkpoint)))


@dataclass(frozen=True)
class GroupSnapshot:
    """What one group's snapshot did (the asset's metadata)."""

    mode: str  # "full", "incremental", "unchanged" or "hosted" (another group's rows serve it)
    reason: str
    version: int
    partitions_read: int
    rows_read: int
    entities_written: int
    rows_stored: int
    entities_looked_up: int = 0


def _partition_files(table: DeltaTable, partition_column: str) -> pl.DataFrame:
    actions = pl.DataFrame(table.get_add_actions(flatten=True))
    column = f"partition.{partition_column}"
    if actions.height == 0:
        return pl.DataFrame(schema={"path": pl.String, "partition": pl.Date})
    if column not in actions.columns:
        raise ValueError(f"{table.table_uri} is not partitioned by {partition_column}")
    return actions.select("path", pl.col(column).cast(pl.Date).alias("partition"))


def changed_partitions(old: DeltaTable, new: DeltaTable, partition_column: str) -> list[date]:
    """Partitions holding a file that one of the two versions has and the other has not."""
    before = _partition_files(old, partition_column)
    after = _partition_files(new, partition_column)
    added = after.join(before, on="path", how="anti")
    removed = before.join(after, on="path", how="anti")
    return sorted(set(added["partition"].to_list()) | set(removed["partition"].to_list()))


def _read(
    table: DeltaTable,
    partition_column: str,
    partitions: list[date],
    columns: list[str],
    schema: pl.Schema,
) -> pl.DataFrame:
    if not partitions:
        return pl.DataFrame(schema={c: schema[c] for c in columns})
    values = [p.isoformat() for p in partitions]
    # pruned while the log is replayed: ``to_pyarrow_table(filters=...)`` sets up a fragment per
    # file of the table first, which grew with history (a file per day)
    pruned = table.to_pyarrow_dataset(file_pruning_predicate=[(partition_column, "in", values)])
    arrow = pruned.to_table(columns=columns)
    return pl.DataFrame(arrow).cast({c: schema[c] for c in columns})


FIRST_LOOKUP_DAYS = 7


def _newest_rows_before(
    table: DeltaTable,
    partition_column: str,
    earlier: list[date],
    entities: pl.DataFrame,
    columns: list[str],
    schema: pl.Schema,
) -> pl.DataFrame:
    """The rows of the ``earlier`` partitions that hold the newest row of each of ``entities``
    (none has a row in a later partition). Read newest first, a week, then twice as many days
    at a time; an entity found in a batch is not looked for in older ones (its rows there are
    older), so usually the first batch is all that is read (filtering the whole table on the
    keys read every file: it grew with history)."""
    found = [pl.DataFrame(schema={c: schema[c] for c in columns})]
    remaining = entities[ENTITY_KEY].unique()
    earlier = sorted(earlier, reverse=True)
    batch, taken = FIRST_LOOKUP_DAYS, 0
    while taken < len(earlier) and remaining.len():
        rows = _read(table, partition_column, earlier[taken : taken + batch], columns, schema)
        rows = rows.filter(pl.col(ENTITY_KEY).is_in(remaining.implode()))
        found.append(rows)
        remaining = remaining.filter(~remaining.is_in(rows[ENTITY_KEY].implode()))
        taken, batch = taken + batch, batch * 2
    return pl.concat(found)


def _encoded(group: FeatureGroup, rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(ENTITY_KEY).with_columns(encode_rows(group, rows)["value"])


def _encoded_latest(group: FeatureGroup, rows: pl.DataFrame) -> pl.DataFrame:
    return _encoded(group, latest_per_entity(rows))


def snapshot_group(
    client: redis.Redis,
    store: DeltaStore,
    table: str,
    group: FeatureGroup,
    *,
    partition_column: str,
    full: bool = False,
) -> GroupSnapshot:
    """Bring the online store up to date with the offline ``table`` of ``group`` (module
    docstring); a full snapshot when ``full``, without a usable checkpoint, or when the table
    was recreated. A group served from another group's rows (``shared.storage_host``) writes
    nothing: the host's snapshot writes its rows."""
    if hosted(group):
        host = storage_host(group).versioned_name
        return GroupSnapshot("hosted", f"served from {host}'s rows", 0, 0, 0, 0, 0)
    current = store.open(table)
    version = current.version()
    checkpoint = None if full else read_checkpoint(client, group)
    reason = ""
    if full:
        reason = "full snapshot requested"
    elif checkpoint is None:
        reason = "no checkpoint in the online store"
    elif checkpoint.table_id != current.metadata().id:
        reason = "the offline table was recreated"
    elif checkpoint.version > version:
        reason = f"checkpoint version {checkpoint.version} is ahead of the table's {version}"
    if reason or checkpoint is None:
        return _full(client, store, table, group, current, partition_column, reason)
    if checkpoint.version == version:
        return GroupSnapshot("unchanged", f"still at version {version}", version, 0, 0, 0, 0)
    return _incremental(client, store, table, group, current, checkpoint, partition_column)


def _full(
    client: redis.Redis,
    store: DeltaStore,
    table: str,
    group: FeatureGroup,
    current: DeltaTable,
    partition_column: str,
    reason: str,
) -> GroupSnapshot:
    version = current.version()
    rows = store.read(table, version=version)
    written = snapshot_rows(group, rows)
    stored = write_snapshot(client, group, written)
    save_checkpoint(client, group, Checkpoint(current.metadata().id, version))
    partitions = rows[partition_column].n_unique() if rows.height else 0
    entities = written[ENTITY_KEY].n_unique()
    return GroupSnapshot("full", reason, version, partitions, rows.height, entities, stored)


def snapshot_rows(group: FeatureGroup, rows: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``rows`` the online store keeps (module docstring)."""
    return online_history(group, rows) if retained_windows(group) else latest_per_entity(rows)


def _incremental(
    client: redis.Redis,
    store: DeltaStore,
    table: str,
    group: FeatureGroup,
    current: DeltaTable,
    checkpoint: Checkpoint,
    partition_column: str,
) -> GroupSnapshot:
    version = current.version()
    schema = pl.scan_delta(store.uri(table), version=version).collect_schema()
    columns = [ENTITY_KEY, FEATURE_TIME, *stored_group(group).feature_names]
    try:
        previous = store.open(table, version=checkpoint.version)
        changed = changed_partitions(previous, current, partition_column)
        old = _read(previous, partition_column, changed, columns, schema)
    except (DeltaError, OSError) as exc:  # its log entries or its files were cleaned up
        reason = f"checkpoint version {checkpoint.version} is no longer readable: {exc}"
        return _full(client, store, table, group, current, partition_column, reason[:300])
    new = _read(current, partition_column, changed, columns, schema)
    later: list[date] = []
    earlier: list[date] = []
    if changed:
        present = _partition_files(current, partition_column)["partition"].unique().to_list()
        later = sorted(p for p in present if p > changed[0] and p not in set(changed))
        earlier = [p for p in present if p < changed[0]]
    seen = pl.concat([new[ENTITY_KEY], old[ENTITY_KEY]]).unique()
    after = _read(current, partition_column, later, columns, schema).filter(
        pl.col(ENTITY_KEY).is_in(seen.implode())
    )
    if retained_windows(group):
        read = _Read(current, partition_column, columns, schema, earlier)
        return _incremental_history(
            client, group, checkpoint, read, changed, later, old, new, after
        )
    latest_new = _encoded_latest(group, pl.concat([new, after]))
    latest_old = _encoded_latest(group, pl.concat([old, after]))
    differs = latest_new.join(
        latest_old, on=[ENTITY_KEY, "value"], how="anti", nulls_equal=True
    ).select(ENTITY_KEY)
    candidates = pl.concat([new, after]).join(differs, on=ENTITY_KEY, how="semi")
    # entities whose rows of P all disappeared: their newest row is in an earlier partition
    gone = latest_old.select(ENTITY_KEY).join(latest_new, on=ENTITY_KEY, how="anti")
    looked_up = _newest_rows_before(current, partition_column, earlier, gone, columns, schema)
    latest = latest_per_entity(pl.concat([candidates, looked_up]))
    rows_read = new.height + old.height + after.height + looked_up.height
    partitions = len(changed) + len(later)
    return _written(client, group, checkpoint, version, latest, partitions, rows_read, gone.height)


def _written(
    client: redis.Redis,
    group: FeatureGroup,
    checkpoint: Checkpoint,
    version: int,
    rows: pl.DataFrame,
    partitions: int,
    rows_read: int,
    gone: int,
    entities: int | None = None,
) -> GroupSnapshot:
    """Write an incremental snapshot's ``rows``, then its checkpoint (a crash in between
    repeats the same writes next time)."""
    stored = write_snapshot(client, group, rows)
    save_checkpoint(client, group, Checkpoint(checkpoint.table_id, version))
    return GroupSnapshot(
        "incremental",
        f"versions {checkpoint.version}..{version}",
        version,
        partitions,
        rows_read,
        rows.height if entities is None else entities,
        stored,
        gone,
    )


@dataclass(frozen=True)
class _Read:
    """How to read more of the current version (``_incremental_history``)."""

    table: DeltaTable
    partition_column: str
    columns: list[str]
    schema: pl.Schema
    earlier: list[date]  # the partitions before min(P)

    def newest_before(self, partitions: list[date], entities: pl.DataFrame) -> pl.DataFrame:
        return _newest_rows_before(
            self.table, self.partition_column, partitions, entities, self.columns, self.schema
        )


def _incremental_history(
    client: redis.Redis,
    group: FeatureGroup,
    checkpoint: Checkpoint,
    read: _Read,
    changed: list[date],
    later: list[date],
    old: pl.DataFrame,
    new: pl.DataFrame,
    after: pl.DataFrame,
) -> GroupSnapshot:
    """Step 5 of the module docstring: a group with windows as of the lookup."""
    version = read.table.version()
    now, before = pl.concat([new, after]), pl.concat([old, after])
    encoded_now, encoded_before = _encoded_rows(group, now), _encoded_rows(group, before)
    on = [ENTITY_KEY, "value"]
    first = (
        pl.concat(
            [
                encoded_now.join(encoded_before, on=on, how="anti", nulls_equal=True),
                encoded_before.join(encoded_now, on=on, how="anti", nulls_equal=True),
            ]
        )
        .group_by(ENTITY_KEY)
        .agg(pl.col(FEATURE_TIME).min().alias(_FIRST))
    )
    rows = now.join(first, on=ENTITY_KEY, how="inner")
    # entities whose rows of P all disappeared: their newest row is in an earlier partition
    gone = first.join(rows, on=ENTITY_KEY, how="anti").select(ENTITY_KEY)
    looked_up = read.newest_before(read.earlier, gone)
    # an entity's rows from its first differing one on hold its newest, and each of them its
    # successor: the rule decides them as it would over the whole history. Its older rows are
    # what the store holds already (written before, or dropped by the write script's trim,
    # which also re-decides them now that newer rows arrive)
    kept = online_history(group, rows.drop(_FIRST)).join(first, on=ENTITY_KEY, how="inner")
    written = pl.concat(
        [kept.filter(pl.col(FEATURE_TIME) >= pl.col(_FIRST)).drop(_FIRST), looked_up]
    )
    rows_read = new.height + old.height + after.height + looked_up.height
    partitions = len(changed) + len(later)
    return _written(
        client,
        group,
        checkpoint,
        version,
        written,
        partitions,
        rows_read,
        gone.height,
        first.height,
    )


_FIRST = "__first_differing"


def _encoded_rows(group: FeatureGroup, rows: pl.DataFrame) -> pl.DataFrame:
    return rows.select(ENTITY_KEY, FEATURE_TIME).with_columns(encode_rows(group, rows)["value"])
