"""Entity shards of a feature group's source: a sharded backfill's run workers each compute the
rows of one shard's entities (``defs/features/sharded.py``)."""

from __future__ import annotations

import zlib

import polars as pl

from fraud_platform.lib.features.compute import entity_key_expr
from fraud_platform.lib.features.registry import ENTITY_KEY, FeatureGroup


def entity_shards(entity_keys: pl.Series, shards: int) -> pl.Series:
    """The shard (0..shards-1) of each entity key: CRC-32 of its UTF-8 text, modulo ``shards``.

    CRC-32 (zlib), not polars' ``hash``: polars documents its hash as unstable across versions,
    and every run worker of a sharded backfill must put an entity in the same shard.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, not {shards}")
    return entity_keys.map_elements(
        lambda key: zlib.crc32(key.encode()) % shards, return_dtype=pl.Int64
    )


def shard_source(
    group: FeatureGroup, source: pl.DataFrame | pl.LazyFrame, shard: int, shards: int
) -> pl.LazyFrame:
    """The source events of the entities of ``group`` in ``shard`` of ``shards``: an entity's
    rows depend only on its own events, so ``compute_feature_group`` over each shard's events
    gives disjoint row sets whose union is the unsharded result."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    source = source.lazy()
    keys = source.select(entity_key_expr(group.entity.join_keys)).unique().drop_nulls().collect()
    keys = keys.filter(entity_shards(keys[ENTITY_KEY], shards) == shard)
    shard_key = "__shard_entity_key"
    return (
        source.with_columns(entity_key_expr(group.entity.join_keys).alias(shard_key))
        .join(keys.lazy().rename({ENTITY_KEY: shard_key}), on=shard_key, how="semi")
        .drop(shard_key)
    )
