"""Recomputing a stale range for the entities whose source events changed, not for every entity.

A feature row depends only on its own entity's events. After a micro-batch the stale range
(the earliest new event's day .. today) holds the rows of every entity, but only the entities
with a new event have rows that changed: one hour of events reaches ~900 entities of the 14
groups' tens of thousands, while recomputing the range for everyone re-reads 35 days of events
per group.

What a feature table reflects is recorded in the commit metadata of its latest write: every
source event ingested up to ``INGESTED_THROUGH`` (the source's newest silver ``ingested_at``
when the write read it) is reflected in the partitions up to ``PARTITIONS_THROUGH``. Silver
stamps each row with the ingestion commit that delivered it first (``fct_*``: re-deliveries
keep the first copy's stamp; ``compute.py``'s tie-break ignores the delivery columns), so the
events a later run must take in are exactly those ingested after the mark. A write that cannot
vouch for the whole table (a range after events dated before it arrived, the union of shard
runs) records no mark, and the next range is computed for every entity again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import polars as pl

from fraud_platform.lib.features.compute import entity_key_expr
from fraud_platform.lib.features.registry import ENTITY_KEY, FeatureGroup
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

INGESTED_AT = "ingested_at"
# Silver tables whose rows never change once written but for their delivery count (the
# incremental ``fct_*`` merges keep the first copy): an event ingested before a mark is
# reflected by it for good. Not dim_account_profile_versions (a new version closes the previous
# row's validity) nor fct_merchant_fraud_labels (rebuilt whole, stamped with the label's time).
STAMPED_SOURCES = frozenset({"fct_transactions", "fct_account_events"})
INGESTED_THROUGH = "source_ingested_through"
PARTITIONS_THROUGH = "reflects_partitions_through"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Mark:
    """The table reflects every source event ingested up to ``ingested_through`` (a DuckDB
    timestamp literal) in its partitions up to ``partitions_through``."""

    ingested_through: str
    partitions_through: date

    def metadata(self) -> dict[str, str]:
        return {
            INGESTED_THROUGH: self.ingested_through,
            PARTITIONS_THROUGH: self.partitions_through.isoformat(),
        }


def _source(group: FeatureGroup) -> str:
    return f'silver."{group.source}"'


def newest_ingestion(warehouse: WarehouseResource, group: FeatureGroup) -> str | None:
    """The source's newest ``ingested_at`` (None: not a ``STAMPED_SOURCES`` table, or empty).
    Read before the events, so a mark made from it never claims events the run did not read."""
    if group.source not in STAMPED_SOURCES:
        return None
    columns = warehouse.query(f"select * from {_source(group)} limit 0").columns
    if INGESTED_AT not in columns:  # e.g. a test's silver table built from simulated events
        return None
    newest = warehouse.query(
        f"select cast(max({INGESTED_AT}) as varchar) as newest from {_source(group)}"
    ).item()
    return None if newest is None else str(newest)


def recorded_mark(delta: DeltaStore, table: str) -> Mark | None:
    """The mark of the table's latest commit, if it has one."""
    if not delta.exists(table):
        return None
    latest = delta.open(table).history(1)[0]
    if INGESTED_THROUGH not in latest or PARTITIONS_THROUGH not in latest:
        return None
    return Mark(str(latest[INGESTED_THROUGH]), date.fromisoformat(str(latest[PARTITIONS_THROUGH])))


def _ingested_after(mark: Mark) -> str:
    return f"{INGESTED_AT} > cast('{mark.ingested_through}' as timestamptz)"


def arrived_dated_before(
    warehouse: WarehouseResource, group: FeatureGroup, mark: Mark, before: datetime
) -> int:
    """Source events ingested after ``mark`` and dated before ``before``."""
    return int(
        warehouse.query(
            f"select count(*) from {_source(group)} where {_ingested_after(mark)} "
            f"and \"{group.event_time_column}\" < '{before.isoformat()}'"
        ).item()
    )


def mark_after_range(
    warehouse: WarehouseResource,
    group: FeatureGroup,
    previous: Mark | None,
    newest: str | None,
    start: datetime,
    last: date,
    events_before_start: int | None,
) -> Mark | None:
    """The mark a write of the partitions ``start .. last`` computed from the events ingested up
    to ``newest`` may record: the partitions before ``start`` must reflect them already (no
    event dated before ``start`` (``events_before_start``, None: some), or the previous mark
    covered them and nothing dated before ``start`` arrived since)."""
    if newest is None:
        return None
    if events_before_start == 0:
        return Mark(newest, last)
    if previous is None or previous.partitions_through < (start - DAY).date():
        return None
    if arrived_dated_before(warehouse, group, previous, start):
        return None
    return Mark(newest, last)


def source_events_of(
    warehouse: WarehouseResource,
    group: FeatureGroup,
    mark: Mark,
    since: datetime,
    end: datetime,
) -> pl.DataFrame:
    """The events dated in ``[since, end)`` of the entities with an event ingested after
    ``mark`` (one query: the changed keys joined to the range)."""
    keys = [f'"{k}"' for k in group.entity.join_keys]
    column = f'"{group.event_time_column}"'
    on = " and ".join(f"s.{k} = c.{k}" for k in keys)
    return warehouse.query(
        f"select s.* from {_source(group)} s semi join ("
        f"select distinct {', '.join(keys)} from {_source(group)} where {_ingested_after(mark)}"
        f") c on {on} where s.{column} >= '{since.isoformat()}' and s.{column} < '{end.isoformat()}'"
    )


def unchanged_rows(
    delta: DeltaStore,
    table: str,
    group: FeatureGroup,
    source: pl.DataFrame,
    partition_column: str,
    first: date,
    last: date,
) -> pl.DataFrame:
    """The stored rows of partitions ``first .. last`` of the entities without an event in
    ``source`` (``source_events_of``: an entity with a new event in the range is in it; one
    whose new events are all later has no row in the range either way)."""
    keys = source.select(entity_key_expr(group.entity.join_keys)).unique()
    return (
        delta.scan(table)
        .filter(pl.col(partition_column).is_between(first, last))
        .drop(partition_column)
        .join(keys.lazy(), on=ENTITY_KEY, how="anti")
        .collect()
    )
