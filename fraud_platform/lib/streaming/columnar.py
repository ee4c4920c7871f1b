"""A checkpoint's events as polars frames, from the validated Arrow table to the entity stores,
with no Python per event.

``events_frame`` turns the contract-valid records (``validate_batch``'s table) into the frame
every entity stream reads: empty ids as missing (``nullif(id, '')`` in staging) and the event
time as epoch microseconds (``AT``). ``stream_adds`` gives one entity stream's events grouped by
entity (first appearance order, input order within an entity, as ``store.add_events`` expects),
with each event's stored payload (the JSON array of ``EntityStream.columns``: floats as their
shortest round-trip text, read back bit for bit) built by polars, all streams in two polars
calls. ``add_stream_events`` adds streams' events to their stores in one pipeline: on a single
server the ``EVALSHA`` commands are packed as RESP by polars (redis-py's packing and the
per-event argument lists were ~15% of the worker's samples, py-spy); on a Redis Cluster through
``store.add_events``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import redis

from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.layout import (
    EXPIRY_MARGIN_MS,
    HISTORY_HORIZON,
    json_text,
    to_micros,
)
from fraud_platform.lib.features.online.scripts import (
    PipelinedScript,
    keyed_calls,
    packed_evalsha,
    resp_bulk,
)
from fraud_platform.lib.streaming.plan import ID_COLUMNS, EntityStream
from fraud_platform.lib.streaming.store import (
    ADD_LUA,
    CHUNK_ENTITIES,
    EntityBatch,
    add_events,
    store_key,
)

ENTITY, AT = "__entity", "__at"
_ID, _PAYLOAD, _ROW = "__id", "__payload", "__row"
EVENT_TIME = "event_time"


def events_frame(table: pa.Table | pl.DataFrame) -> pl.DataFrame:
    """Validated records as the streams' input: ids ``''`` as null, ``AT`` the event time in
    epoch microseconds."""
    frame = table if isinstance(table, pl.DataFrame) else pl.DataFrame(pl.from_arrow(table))
    ids = [c for c in ID_COLUMNS if c in frame.columns]
    return frame.with_columns(
        *(pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in ids),
        pl.col(EVENT_TIME).dt.epoch("us").alias(AT),
    )


def records_frame(
    streams: Sequence[EntityStream], records: Sequence[Mapping[str, Any]]
) -> pl.DataFrame:
    """``events_frame`` of record dicts (bronze rows, tests): the columns ``streams`` store."""
    schema: dict[str, pl.DataType] = {}
    for stream in streams:
        schema.update(stream.schema())
    times = [at if isinstance(at := r[EVENT_TIME], int) else to_micros(at) for r in records]
    columns = [pl.Series(AT, times, dtype=pl.Int64)]
    columns += [
        pl.Series(name, [r.get(name) for r in records], dtype=dtype, strict=False)
        for name, dtype in schema.items()
        if name != EVENT_TIME
    ]
    frame = pl.DataFrame(columns).with_columns(
        pl.col(AT).cast(pl.Datetime("us", "UTC")).alias(EVENT_TIME)
    )
    return events_frame(frame)


@dataclass
class StreamAdds:
    """One stream's events of a checkpoint: ``rows`` (``ENTITY``, ``_ID``, ``_PAYLOAD`` and the
    stored columns) grouped by entity, ``entities`` (``ENTITY``, ``count``, ``since``,
    ``newest``: first and last event time in microseconds, ``key``, ``pxat``) in that order,
    and ``calls``: its ``ADD_LUA`` calls on a single server (``scripts.keyed_calls``)."""

    stream: EntityStream
    rows: pl.DataFrame
    entities: pl.DataFrame
    calls: pl.DataFrame


def _rows_query(stream: EntityStream, events: pl.DataFrame) -> pl.LazyFrame:
    keys = stream.join_keys
    entity = (
        pl.col(keys[0]).cast(pl.String)
        if len(keys) == 1
        else pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator=KEY_SEPARATOR)
    )
    schema = stream.schema()
    payload: list[pl.Expr] = [pl.lit("[")]
    for i, name in enumerate(stream.columns):
        if i:
            payload.append(pl.lit(","))
        if name == stream.time_column:
            payload.append(pl.col(AT).cast(pl.String))
        else:
            kind = "float" if schema[name] == pl.Float64 else "str"
            payload.append(json_text(name, kind, schema[name] == pl.Null))
    payload.append(pl.lit("]"))
    return (
        events.lazy()
        .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
        .select(
            entity.alias(ENTITY),
            pl.col(AT),
            pl.col(stream.id_column).cast(pl.String).alias(_ID),
            pl.concat_str(payload).alias(_PAYLOAD),
            *(pl.col(c) for c in stream.columns if c != stream.time_column),
        )
        .with_row_index(_ROW)
        .sort(pl.col(_ROW).min().over(ENTITY), _ROW)
        .drop(_ROW)
    )


def _entities_query(stream: EntityStream, rows: pl.DataFrame, store_prefix: str) -> pl.LazyFrame:
    retention_ms = stream.retention // HISTORY_HORIZON.resolution // 1000
    prefix = store_key(store_prefix, stream.name, "\0").split("\0")[0]
    return (
        rows.lazy()
        .group_by(ENTITY, maintain_order=True)
        .agg(
            pl.len().alias("count"),
            pl.col(AT).min().alias("since"),
            pl.col(AT).max().alias("newest"),
            pl.concat_str([resp_bulk(pl.col(_ID)), resp_bulk(pl.col(_PAYLOAD))])
            .str.join("")
            .alias("events"),
        )
        .with_columns(
            pl.concat_str([pl.lit(prefix), pl.col(ENTITY), pl.lit("}")]).alias("key"),
            (pl.col("newest") // 1000 + retention_ms + EXPIRY_MARGIN_MS).alias("pxat"),
        )
    )


def _calls_query(entities: pl.LazyFrame) -> pl.LazyFrame:
    """The ``keyed_calls`` of ``ADD_LUA`` calls of CHUNK_ENTITIES entities each."""
    count = pl.col("count")
    return keyed_calls(
        entities,
        call=pl.int_range(pl.len()) // CHUNK_ENTITIES,
        argc=2 + 2 * count,
        args=pl.concat_str([resp_bulk(count), resp_bulk(pl.col("pxat")), pl.col("events")]),
    )


def stream_adds(
    streams: Sequence[EntityStream], events: pl.DataFrame, store_prefix: str
) -> list[StreamAdds]:
    """Each stream's ``StreamAdds`` of ``events``: two polars calls for all streams (a call's
    fixed cost, paid per stream, was most of a small checkpoint's time)."""
    if not streams:
        return []
    rows = pl.collect_all([_rows_query(s, events) for s in streams], engine="in-memory")
    entities = [_entities_query(s, r, store_prefix) for s, r in zip(streams, rows, strict=True)]
    frames = pl.collect_all([*entities, *(_calls_query(e) for e in entities)], engine="in-memory")
    return [
        StreamAdds(stream, rows[i], frames[i], frames[len(streams) + i])
        for i, stream in enumerate(streams)
    ]


def cache_rows(adds: StreamAdds, added: pl.Series) -> pl.DataFrame:
    """The ``added`` rows as the worker's in-memory copy holds events: ``stream.columns`` with
    the source's types (the time as a UTC datetime), then ``ENTITY``."""
    stream = adds.stream
    schema = stream.schema()
    return adds.rows.filter(added).select(
        *(
            pl.col(AT).cast(pl.Datetime("us", "UTC")).alias(c)
            if c == stream.time_column
            else pl.col(c).cast(schema[c])
            for c in stream.columns
        ),
        pl.col(ENTITY),
    )


def add_stream_events(
    client: redis.Redis, all_adds: Sequence[StreamAdds]
) -> list[tuple[list[int], list[str]]]:
    """Add every stream's events to their entity stores (``store.ADD_LUA``) in one pipeline;
    per stream, per entity (``entities`` order): the version after the add and a flag per
    event ("1" added, "0" already stored)."""
    script = PipelinedScript(client, ADD_LUA)
    if script.cluster:
        return [_add_cluster(client, adds) for adds in all_adds]
    counts: list[int] = []

    def pack(sha: str) -> list[bytes]:
        packed: list[bytes] = []
        for adds in all_adds:
            calls = packed_evalsha(sha, adds.calls)
            counts.append(len(calls))
            packed += calls
        return packed

    replies = script.run_packed(pack, 1 << 30)
    out = []
    at = 0
    for count in counts:
        versions: list[int] = []
        flags: list[str] = []
        for reply in replies[at : at + count]:
            for version, flag in reply:
                versions.append(int(version))
                flags.append(flag.decode() if isinstance(flag, bytes) else flag)
        at += count
        out.append((versions, flags))
    return out


def _add_cluster(client: redis.Redis, adds: StreamAdds) -> tuple[list[int], list[str]]:
    grouped = adds.rows.group_by(ENTITY, maintain_order=True).agg(_ID, _PAYLOAD)
    batches = [
        EntityBatch(key=key, events=list(zip(ids, payloads, strict=True)), pxat_ms=pxat)
        for key, pxat, ids, payloads in zip(
            adds.entities["key"].to_list(),
            adds.entities["pxat"].to_list(),
            grouped[_ID].to_list(),
            grouped[_PAYLOAD].to_list(),
            strict=True,
        )
    ]
    replies = add_events(client, batches)
    return [v for v, _ in replies], [f for _, f in replies]


def added_mask(flags: list[str]) -> pl.Series:
    """The rows (in ``StreamAdds.rows`` order) their store added, from the per-entity flags."""
    joined = "".join(flags).encode()
    return pl.Series(np.frombuffer(joined, dtype=np.uint8) == ord("1"))
