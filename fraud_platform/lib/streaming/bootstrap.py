"""Start a new stream consumer group where the batch path stands, instead of at the topics'
beginning.

A worker of a new group would otherwise replay every retained event (a month of history: minutes
of work) only to rewrite rows the batch snapshot already holds. Bronze knows exactly what the
batch path has ingested: its Delta log records, per partition, the next offset to read, in the
same commit as the rows. So from ONE bronze version per topic:

1. the entity stores are seeded with the events the stream keeps (every event of each entity
   whose newest event is within ``retention`` of now),
   in partition and offset order (the first copy of an event id wins, as in silver and as the
   worker would have stored them), without computing rows: the snapshot has them;
2. the group's offsets are set to the recorded positions: the worker starts at the first event
   bronze has not ingested.

A group that already has committed offsets is left alone (the worker resumes where it stopped).
Bootstrapping while ingestion runs is safe: the rows and the positions come from one version.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
from confluent_kafka import Consumer, TopicPartition

from fraud_platform.lib.ingestion.bronze import positions_at
from fraud_platform.lib.kafka.admin import admin_config
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.streaming.plan import ID_COLUMNS, EntityStream
from fraud_platform.lib.streaming.processor import StreamProcessor
from fraud_platform.names import bronze_table

SEED_CHUNK = 20_000  # events per seeding call: bounded memory for the record dicts
_SEED = "__seed_stream_"  # per stream: whether the event is seeded into that stream's stores


@dataclass
class BootstrapResult:
    started_from: str  # "bronze" or "committed offsets" (an existing group: nothing done)
    seeded_events: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)


def _group_consumer(bootstrap: str, group: str) -> Consumer:
    """A consumer of ``group`` that never subscribes: reads and sets its committed offsets."""
    return Consumer(
        {
            **admin_config(bootstrap),
            "group.id": group,
            "client.id": f"bootstrap-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
        }
    )


def _committed(bootstrap: str, group: str, topics: Mapping[str, str]) -> list[TopicPartition]:
    consumer = _group_consumer(bootstrap, group)
    try:
        partitions = []
        for name in topics.values():
            metadata = consumer.list_topics(name, timeout=10).topics[name]
            partitions += [TopicPartition(name, p) for p in metadata.partitions]
        return consumer.committed(partitions, timeout=10)
    finally:
        consumer.close()


def _commit(bootstrap: str, group: str, offsets: list[TopicPartition]) -> None:
    consumer = _group_consumer(bootstrap, group)
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def bronze_position(store: DeltaStore, topic: str) -> tuple[int | None, dict[int, int]]:
    """The bronze table's latest version and, at that version, the next offset per partition."""
    if not store.exists(bronze_table(topic)):
        return None, {}
    table = store.open(bronze_table(topic))
    return table.version(), positions_at(table, topic)


def _kept(stream: EntityStream, now: datetime) -> pl.Expr:
    """True for every event of an entity whose newest event is within ``stream.retention`` of
    ``now``: what a worker that had run all along would hold (a store expires only after its
    entity's newest event, so it keeps old events the lifetime features read, such as the last
    password change a month ago, and the batch path counts them too)."""
    keys = [pl.col(k) for k in stream.join_keys]
    present = pl.all_horizontal([k.is_not_null() & (k.cast(pl.String) != "") for k in keys])
    newest = pl.col(stream.time_column).max().over(keys)
    return present & (newest >= now - stream.retention)


def _records(frame: pl.DataFrame) -> list[dict]:
    """Bronze rows as the worker's records: empty ids as missing (``parse_events``)."""
    present = [c for c in ID_COLUMNS if c in frame.columns]
    frame = frame.with_columns(
        pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c) for c in present
    )
    return frame.to_dicts()


def bootstrap_group(
    processor: StreamProcessor,
    store: DeltaStore,
    bootstrap: str,
    consumer_group: str,
    topic_names: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> BootstrapResult:
    """Seed the stores and set ``consumer_group``'s offsets from bronze (see the module
    docstring); nothing when the group already committed offsets. ``topic_names`` maps a
    contract topic to its name on the broker and in bronze (default: the same)."""
    names = {t: (topic_names or {}).get(t, t) for t in processor.topics}
    if any(tp.offset >= 0 for tp in _committed(bootstrap, consumer_group, names)):
        return BootstrapResult("committed offsets")
    now = now or datetime.now(UTC)
    result = BootstrapResult("bronze")
    commits: list[TopicPartition] = []
    for contract, name in names.items():
        version, positions = bronze_position(store, name)
        result.offsets[contract] = positions
        commits += [TopicPartition(name, p, o) for p, o in sorted(positions.items())]
        if version is None:
            continue
        streams = [s for s in processor.plan if s.topic == contract]
        rows = (
            pl.scan_delta(
                store.uri(bronze_table(name)),
                version=version,
                storage_options=dict(store.storage_options) or None,
            )
            .with_columns(_kept(s, now).alias(f"{_SEED}{i}") for i, s in enumerate(streams))
            .filter(pl.any_horizontal(pl.col(f"{_SEED}{i}") for i in range(len(streams))))
            .sort("_partition", "_offset")
            .collect()
        )
        seeded = 0
        masks = [f"{_SEED}{i}" for i in range(len(streams))]
        for chunk in rows.iter_slices(SEED_CHUNK):
            keep = {s.name: chunk[mask] for s, mask in zip(streams, masks, strict=True)}
            seeded += processor.seed(contract, _records(chunk.drop(masks)), keep)
        result.seeded_events[contract] = seeded
    if commits:
        _commit(bootstrap, consumer_group, commits)
    return result
