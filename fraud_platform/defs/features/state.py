"""The lifetime-state checkpoints that let a feature partition range read only its lookback.

``feature_state/<group>`` holds, per day boundary ``valid_at`` of the last
``STATE_RETENTION_DAYS``, each entity's lifetime state after every row before that instant
(``lib/features/incremental.lifetime_state``), and how many source events were dated before it
when it was written. A range starting at ``valid_at`` uses it when that count still holds: an
event dated before the range that arrived later (a refresh that failed, a late event outside
the sensor's range) changes the count, and the range is then computed from the whole history,
which also rewrites the checkpoints. Lateness policy: events up to ``STATE_RETENTION_DAYS`` late
are repaired from a checkpoint; older ones from the whole history.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from fraud_platform import names
from fraud_platform.lib.features.incremental import lifetime_state
from fraud_platform.lib.features.registry import FEATURE_TIME, FeatureGroup
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import WarehouseResource

STATE_RETENTION_DAYS = 14
VALID_AT, EVENTS_BEFORE = "valid_at", "source_events_before"
DAY = timedelta(days=1)


def state_table(group: FeatureGroup) -> str:
    return names.feature_state_table(group.versioned_name)


def events_before_query(
    group: FeatureGroup, instants: list[datetime], more: tuple[str, ...] = ()
) -> str:
    """A one-row query: how many source events are dated before each instant, then the
    ``more`` scalar expressions. Counted as every dated event less those from the instant on,
    the latter among the events from the earliest instant on only: DuckDB then skips the row
    groups of older events (zone maps) instead of reading the whole time column, which grew
    with history."""
    column, source = f'"{group.event_time_column}"', f'silver."{group.source}"'
    since = [
        f"count(*) filter (where {column} >= '{at.isoformat()}') as c{i}"
        for i, at in enumerate(instants)
    ]
    counts = [f"dated.n - recent.c{i}" for i in range(len(instants))]
    earliest = f" where {column} >= '{min(instants).isoformat()}'" if instants else ""
    return (
        f"select {', '.join([*counts, *more]) or '1'} "
        f"from (select count({column}) as n from {source}) as dated, "
        f"(select {', '.join(since) or '1'} from {source}{earliest}) as recent"
    )


def events_before(
    warehouse: WarehouseResource, group: FeatureGroup, instants: list[datetime]
) -> list[int]:
    """How many source events are dated before each instant (``events_before_query``)."""
    return list(warehouse.query(events_before_query(group, instants)).row(0))


def checkpoint_boundaries(start: datetime, end: datetime) -> list[datetime]:
    """The day boundaries in ``(start, end]`` of the last ``STATE_RETENTION_DAYS``: where a
    range ``start .. end`` writes checkpoints."""
    first = max(start + DAY, end - (STATE_RETENTION_DAYS - 1) * DAY)
    return [first + i * DAY for i in range((end - first) // DAY + 1)] if first <= end else []


def read_state(
    delta: DeltaStore,
    warehouse: WarehouseResource,
    group: FeatureGroup,
    start: datetime,
    events_before_start: int | None = None,
) -> pl.DataFrame | None:
    """The lifetime state at ``start`` of an ``is_incremental`` group, or None when there is
    none that still holds (``events_before_start``: the source's count, when already known)."""
    table = state_table(group)
    if not delta.exists(table):
        return None
    state = delta.scan(table).filter(pl.col(VALID_AT) == start.date()).collect()
    if state.height == 0:
        return None
    if events_before_start is None:
        events_before_start = events_before(warehouse, group, [start])[0]
    if state[EVENTS_BEFORE][0] != events_before_start:
        return None  # events dated before `start` arrived after the checkpoint was written
    return state.drop(VALID_AT, EVENTS_BEFORE)


def write_states(
    delta: DeltaStore,
    warehouse: WarehouseResource,
    group: FeatureGroup,
    rows: pl.DataFrame,
    state_at_start: pl.DataFrame,
    start: datetime,
    end: datetime,
    counts: list[int] | None = None,
) -> int:
    """Checkpoints at the ``checkpoint_boundaries`` of ``start .. end`` (``rows``: the range's
    rows; ``counts``: the source events dated before each boundary, when already known); later
    ones are dropped (no longer valid), and those older than the retention. Returns the
    checkpoint rows written."""
    boundaries = checkpoint_boundaries(start, end)
    if counts is None:
        counts = events_before(warehouse, group, boundaries) if boundaries else []
    frames = []
    for at, count in zip(boundaries, counts, strict=True):
        state = lifetime_state(group, rows.filter(pl.col(FEATURE_TIME) < at), state_at_start)
        frames.append(
            state.with_columns(
                pl.lit(at.date()).alias(VALID_AT), pl.lit(count, pl.Int64).alias(EVENTS_BEFORE)
            )
        )
    table = state_table(group)
    frame = pl.concat(frames) if frames else pl.DataFrame()
    if frame.height:
        delta.replace_where(
            table,
            frame,
            f"{VALID_AT} > '{start.date().isoformat()}'",
            partition_by=[VALID_AT],
            metadata={"feature_group": group.versioned_name, "valid_at": f"{boundaries[0]}..{end}"},
        )
    if delta.exists(table):
        oldest = (end - STATE_RETENTION_DAYS * DAY).date().isoformat()
        delta.open(table).delete(f"{VALID_AT} < '{oldest}' OR {VALID_AT} > '{end.date()}'")
    return frame.height
