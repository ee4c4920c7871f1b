"""One checkpoint's events -> feature rows online, with the batch code and nothing else.

For each entity stream (``plan``) the batch's events are added to their entities' stores, and
the rows of the batch's events and of every later event of the entity (a late event changes
them) are computed from the touched entities' events by ``targeted.compute_rows_since`` (the
offline aggregations, evaluated only at those rows: bit-equal to ``compute_feature_group``
over the whole history) and written through the online writer with the entity's version; the
online store keeps the history the lookup needs (``online/layout.py``).

The worker keeps the events of the entities it touched in memory (``_Cache``) and trusts that
copy only while the store's version moved by exactly its own additions: after a restart, a
partition reassignment, or another worker's additions (a merchant paid from users in another
partition) the entity is read back from its store before its rows are computed.

Applying a batch is idempotent: the stores ignore events they hold, rows are a function of the
stored events, and the writer's compare-on-write keeps the row of the highest version. So a
worker killed at any point and restarted from its last committed offsets converges on exactly
the rows of one application of each event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import polars as pl
import redis

from fraud_platform.lib.features.compute import entity_key_expr
from fraud_platform.lib.features.online.history import online_history_query
from fraud_platform.lib.features.online.layout import check_encoded, encode_query
from fraud_platform.lib.features.online.writer import write_encoded
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.shared import ServedGroup, hosted, served_groups, storage_host
from fraud_platform.lib.features.targeted import SINCE, prepare_events, rows_since_query
from fraud_platform.lib.ingestion.batch_validation import validate_batch
from fraud_platform.lib.streaming.cache import EntityCache
from fraud_platform.lib.streaming.columnar import (
    AT,
    ENTITY,
    StreamAdds,
    add_stream_events,
    added_mask,
    cache_rows,
    events_frame,
    records_frame,
    stream_adds,
)
from fraud_platform.lib.streaming.plan import EntityStream, StreamView, stream_plan
from fraud_platform.lib.streaming.store import read_entities, store_key

_VERSION, _ENTITY = "__version", ENTITY
MAX_CACHED_EVENTS = 5_000_000  # per entity stream; past it the copy restarts from the stores


@dataclass
class BatchStats:
    events: int = 0
    rejected: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    rejected_reasons: dict[str, int] = field(default_factory=dict)


def parse_events(topic: str, values: Iterable[bytes | None], stats: BatchStats) -> pl.DataFrame:
    """Contract-valid records of raw Kafka values (bronze's check, ``validate_batch``: the
    records and reasons of ``validate_event``, in half its time) as ``columnar.events_frame``;
    rejects are counted."""
    table, _, rejects = validate_batch(topic, list(values), datetime.now(UTC))
    for _, message in rejects:
        stats.rejected += 1
        reason = message.split(":")[0][:60]
        stats.rejected_reasons[reason] = stats.rejected_reasons.get(reason, 0) + 1
    return events_frame(table)


class StreamProcessor:
    """Applies batches of topic events to the online store (see the module docstring)."""

    def __init__(
        self,
        client: redis.Redis,
        groups: tuple[FeatureGroup, ...],
        *,
        store_prefix: str = "",
    ) -> None:
        self._client = client
        for group in groups:
            host = storage_host(group)
            if all(host is not other for other in groups):
                raise ValueError(
                    f"{group.versioned_name} is served from {host.versioned_name}'s online rows:"
                    " maintain that group too"
                )
        self.plan = stream_plan(groups)
        self._store_prefix = store_prefix
        self._caches: dict[str, EntityCache] = {}
        # which group's rows serve each group, per view: fixed by the plan; a group another
        # group's online rows serve (``shared.storage_host``) is not written at all
        self._served = {
            id(view): [s for s in served_groups(view.groups) if not hosted(s.group)]
            for stream in self.plan
            for view in stream.views
        }
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-writer")
        self._store = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entity-store")

    @property
    def client(self) -> redis.Redis:
        return self._client

    @property
    def topics(self) -> list[str]:
        return sorted({s.topic for s in self.plan})

    def apply_raw(self, topic: str, values: Iterable[bytes | None]) -> BatchStats:
        """Validate raw values of ``topic`` and apply them; returns once every row is written."""
        return self.start_raw(topic, values).result()

    def start_raw(self, topic: str, values: Iterable[bytes | None]) -> Future[BatchStats]:
        """Validate raw values of ``topic``, add them to the stores and compute their rows; the
        rows are still being written when this returns: the future is done once they are (or
        failed), after every write started before it (one writer thread, in order)."""
        stats = BatchStats()
        return self._start_frame(topic, parse_events(topic, values, stats), stats)

    def apply(self, topic: str, records: list[dict[str, Any]], stats: BatchStats) -> None:
        """Apply validated ``records`` of ``topic`` (``apply_raw`` without the contract)."""
        self._start_frame(topic, records_frame(self._streams(topic), records), stats).result()

    def _streams(self, topic: str) -> list[EntityStream]:
        return [stream for stream in self.plan if stream.topic == topic]

    def _start_frame(
        self, topic: str, events: pl.DataFrame, stats: BatchStats
    ) -> Future[BatchStats]:
        """Apply ``events`` (``columnar.events_frame``) of ``topic``: the future is done once
        every row is written. Three stages overlap (a reply wait and a polars query release the
        GIL): the store thread adds stream after stream's events to their stores, this thread
        computes a stream's rows once its stores answered, and the writer thread writes them.
        In-process, same window: 200-event checkpoints 91 vs 95-99 ms and 12k events 2.9-3.0 vs
        3.0-3.2 s against all adds in one round trip first."""
        started = time.perf_counter()
        stats.events += events.height
        pending: list[Future[int]] = []
        streams = self._streams(topic) if events.height else []
        adds = [a for a in stream_adds(streams, events, self._store_prefix) if a.entities.height]
        added = [self._store.submit(add_stream_events, self._client, [a]) for a in adds]
        try:
            for stream_adds_, reply in zip(adds, added, strict=True):
                versions, flags = reply.result()[0]
                pending.append(self._apply_stream(stream_adds_, versions, flags))
        except BaseException:
            for future in [*added, *pending]:  # nothing of it still running once this raises
                future.exception()
            raise

        def written() -> BatchStats:  # on the writer thread, after ``pending``
            stats.rows_written += sum(future.result() for future in pending)
            stats.seconds += time.perf_counter() - started
            return stats

        return self._writer.submit(written)

    def seed(
        self,
        topic: str,
        records: list[dict[str, Any]],
        keep: Mapping[str, pl.Series] | None = None,
    ) -> int:
        """Add already-applied events of ``topic`` to the entity stores without computing rows
        (``bootstrap``: the batch path already wrote their rows); ``keep``: per stream name, a
        mask of the records that stream stores (default: all). Returns events stored."""
        if not records:
            return 0
        streams = self._streams(topic)
        events = records_frame(streams, records)
        if keep is None:
            adds = stream_adds(streams, events, self._store_prefix)
        else:
            adds = [
                add
                for stream in streams
                for add in stream_adds(
                    [stream], events.filter(keep[stream.name]), self._store_prefix
                )
            ]
        replies = add_stream_events(self._client, adds)
        return sum(flag.count("1") for _, flags in replies for flag in flags)

    def _apply_stream(self, adds: StreamAdds, versions: list[int], flags: list[str]) -> Future[int]:
        """Compute the stream's groups' rows of the added events (``versions``, ``flags``: the
        stores' answers); their write (rows stored) is left running on the writer thread."""
        stream = adds.stream
        entities = adds.entities[ENTITY].to_list()
        frame = self._update_cache(adds, entities, versions, flags)
        cached = self._caches[stream.name].versions
        touched = pl.DataFrame(
            [
                pl.Series(ENTITY_KEY, entities, dtype=pl.String),
                pl.Series(_VERSION, [cached[e] for e in entities], dtype=pl.Int64),
                adds.entities["since"].alias(SINCE),
            ]
        )
        views = [(v, touched) for v in stream.views if v.join_keys == stream.join_keys]
        derived = [v for v in stream.views if v.join_keys != stream.join_keys]
        if derived:
            found = pl.collect_all([_view_touched(v, adds, touched) for v in derived])
            views += [(v, t) for v, t in zip(derived, found, strict=True) if t.height]
        groups: list[FeatureGroup] = []
        queries: list[pl.LazyFrame] = []
        for view, view_touched in views:
            source = frame if view.columns == stream.columns else frame.select(view.columns)
            # only the new rows (``targeted``), never the touched histories' every row: with
            # the at-lookup windows left to the reader (``at_lookup_values=False``) a row is
            # its lifetime totals and profiles. In process, 40,000 events over 24 h, worker
            # CPU per event by quarter: 224-257 / 275-315 / 311-353 / 333-420 us against
            # 218-263 / 301-343 / 387-440 / 433-523 recomputing histories up to 20,000 events
            # whole; 60-event checkpoints ~270 ms either way.
            source = prepare_events(view.groups[0], source)  # the groups share the order
            # a group served from another's rows refers to that query object: collect_all
            # evaluates it once (user_txn_velocity v1 and v2 in one checkpoint: 112 ms for
            # both queries, 90 ms for one query referenced twice)
            computed: dict[int, pl.LazyFrame] = {}
            for served in self._served[id(view)]:
                group, root = served.group, served.computed
                if id(root) not in computed:
                    computed[id(root)] = rows_since_query(
                        root, source, view_touched, at_lookup_values=False
                    )
                rows = _served_rows(served, computed[id(root)])
                groups.append(group)
                # encoded in the same query, all groups in one write (a pipeline round trip and
                # a polars call per group before). In memory: under polars' "auto" engine some
                # of these small queries ran on the streaming engine, whose threads took ~23% of
                # the worker's CPU (317 -> 260 µs per event in one comparison, issue 12's note).
                to_write = _rows_to_write(group, rows, view_touched)
                queries.append(encode_query(group, to_write, pl.col(_VERSION), typed=True))
        encoded = pl.collect_all(queries, engine="in-memory")
        checked = [check_encoded(g, e) for g, e in zip(groups, encoded, strict=True)]
        return self._writer.submit(write_encoded, self._client, pl.concat(checked))

    def _update_cache(
        self, adds: StreamAdds, entities: list[str], versions: list[int], flags: list[str]
    ) -> pl.DataFrame:
        """Add the events (``versions``, ``flags``: the stores' answers to adding them) to the
        in-memory copy; the touched entities' events.

        An entity whose stored version moved by exactly this worker's additions is extended in
        memory; any other (first touch, a restart, another worker added events) is read back
        from its store. Measured: reading every touched entity back at each checkpoint cost
        ~40% of the worker's time (benchmarks/stream_freshness.py, --profile in a script)."""
        stream = adds.stream
        cache = self._caches.get(stream.name)
        if cache is None or cache.height > MAX_CACHED_EVENTS:
            self._caches[stream.name] = cache = EntityCache()
        reload: list[str] = []
        for entity, version, flag in zip(entities, versions, flags, strict=True):
            # the version before this add: ours, or 0 (the store was empty: it holds just these)
            if cache.versions.get(entity, 0) == version - flag.count("1"):
                cache.versions[entity] = version
            else:
                reload.append(entity)
        added = added_mask(flags)
        if reload:
            added = added & ~adds.rows[ENTITY].is_in(reload)
            snapshots = read_entities(
                self._client, [store_key(self._store_prefix, stream.name, e) for e in reload]
            )
            owners: list[str] = []
            payloads: list[bytes] = []
            for entity, snapshot in zip(reload, snapshots, strict=True):
                cache.versions[entity] = snapshot.version
                owners += [entity] * len(snapshot.payloads)
                payloads += snapshot.payloads
            rows = orjson.loads(b"[" + b",".join(payloads) + b"]")
            cache.replace(reload, _events_frame(stream, owners, rows))
        cache.add(cache_rows(adds, added))
        return cache.rows_of(entities)


def _events_frame(stream: EntityStream, entities: list[str], rows: list[list[Any]]) -> pl.DataFrame:
    """Stored events (value lists) as a frame with the source's column types and their entity."""
    schema = stream.schema()
    schema[stream.time_column] = pl.Int64()
    # column by column: polars' row orientation cost ~6% of the worker's samples (py-spy)
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema)
    frame = pl.DataFrame(
        [
            pl.Series(name, values, dtype=dtype, strict=False)
            for (name, dtype), values in zip(schema.items(), columns, strict=True)
        ]
    )
    return frame.with_columns(
        pl.col(stream.time_column).cast(pl.Datetime("us", "UTC")),
        pl.Series(_ENTITY, entities, dtype=pl.String),
    )


def _view_touched(view: StreamView, adds: StreamAdds, touched: pl.DataFrame) -> pl.LazyFrame:
    """``touched`` (``ENTITY_KEY``, ``_VERSION``, ``SINCE``) of a view whose entity extends the
    stream's (``user_device`` of ``user``): its entities among the added events, each with its
    earliest event time and the version of the stream entity holding it (a superset of its
    events, so the versions of its rows grow with what was known)."""
    versions = touched.lazy().select(pl.col(ENTITY_KEY).alias(ENTITY), pl.col(_VERSION))
    return (
        adds.rows.lazy()
        .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in view.join_keys))
        .group_by(entity_key_expr(view.join_keys), maintain_order=True)
        .agg(pl.col(ENTITY).first(), pl.col(AT).min().alias(SINCE))
        .join(versions, on=ENTITY, how="inner")
        .select(ENTITY_KEY, _VERSION, SINCE)
    )


def _served_rows(served: ServedGroup, rows: pl.LazyFrame) -> pl.LazyFrame:
    """The rows of ``served.group`` from those of the group computed for it."""
    if served.computed is served.group:
        return rows
    keys = served.group.entity.join_keys
    renamed = [pl.col(theirs).alias(mine) for theirs, mine in served.columns.items()]
    return rows.select(ENTITY_KEY, *keys, FEATURE_TIME, *renamed)


def _rows_to_write(group: FeatureGroup, rows: pl.LazyFrame, touched: pl.DataFrame) -> pl.LazyFrame:
    """Rows at or after each entity's earliest new event (a late event changes every later row)
    that the online history keeps (``online_history``: whether a row is kept depends only on the
    next row and the entity's newest, both at or after SINCE too)."""
    ft_us = pl.col(FEATURE_TIME).dt.epoch("us")
    since = rows.join(touched.lazy(), on=ENTITY_KEY, how="inner").filter(ft_us >= pl.col(SINCE))
    return online_history_query(group, since)


def apply_records(
    processor: StreamProcessor, by_topic: Mapping[str, list[dict[str, Any]]]
) -> BatchStats:
    """Apply already-validated records (tests, benchmarks) topic by topic."""
    stats = BatchStats()
    for topic, records in by_topic.items():
        processor.apply(topic, records, stats)
    return stats
