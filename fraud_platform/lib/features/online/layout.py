"""The online store's layout: each entity's recent feature rows in Redis, one sorted set per entity.

Key layout (version ``ONLINE_LAYOUT_VERSION`` = 6)::

    fp:6:<group name>:v<group version>:{<entity name>:<entity key>}
        ->  sorted set of rows, score = feature_time

The braces are a Redis Cluster hash tag: every group of one entity hashes to one slot, so a
script call may take all of an entity's keys (``scripts.py``); on a single server they are
just characters of the key.

Member: a JSON array ``[feature_time, f1, f2, ..., fn, writer_version]``: the row's feature_time
in epoch microseconds (also its score), the group's features in their declared order (``null``
for a windowed feature evaluated at the lookup, ``windows.at_lookup``: the reader computes it
from the hidden columns, so its value as of the row is neither stored nor computed online) followed
by the hidden columns of ``windows.stored_group`` (prefix totals as JSON integers, the span
start, window profiles as JSON arrays), then the version of the knowledge that computed it (``0`` for the batch snapshot, the entity's event
counter for the stream worker). A null feature is ``null``; ints are JSON integers; floats are
their shortest round-trip decimal text (polars' formatting, bit-exact through ``float()``; NaN
and +-Infinity as Python's ``json`` writes them); timestamps are epoch microseconds; strings are
JSON strings. The reader (``reader.py``) turns each element back into its declared dtype.

Why several rows: a transaction may be scored before, while or after the stream worker applies
it (and later events of its entity). The lookup at ``t`` takes the latest row with
``feature_time < t`` within the TTL (``ZREVRANGEBYSCORE key (t t-ttl LIMIT 0 1``), so rows of
the transaction itself or later never hide the one it must see. The rows kept (``history.py``)
are those a lookup up to ``HISTORY_HORIZON`` before the entity's newest row (its time rounded
down to ``HISTORY_GRANULE``) reads (its row and its windows' start rows), and at least
``HISTORY_MIN_ROWS``.

Every write goes through ONE Lua script (``writer.py``) that compares on feature_time: a row
never replaces a row of another feature_time (an older row can never hide a newer one), and at
the same feature_time it replaces the stored row only if its writer_version is not lower. The
key expires ``ttl`` + 7 days after its newest feature_time; the reader applies the TTL and the
"strictly before" rule itself, so what it serves equals the offline point-in-time join. Because
the layout and the group version are in the key, a new version of a group (or of the layout) is
written beside the old one, except that a version whose columns a later version of the catalog
holds with the same TTL is served from that version's keys (``shared.storage_host``) and never
written itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from fraud_platform.lib.features.registry import (
    ENTITY_KEY,
    FEATURE_TIME,
    FeatureGroup,
    per_group,
)
from fraud_platform.lib.features.shared import hosted, storage_host
from fraud_platform.lib.features.windows import at_lookup, stored_group

ONLINE_LAYOUT_VERSION = 6
# Rows kept per entity: every row a lookup up to this much before the start of the minute of
# the entity's newest row reads, and at least HISTORY_MIN_ROWS. A lookup lagging the stream by
# more than the horizon may find no row before its time (the contract accepts events up to 10
# minutes in the future; scoring lags seconds).
HISTORY_HORIZON = timedelta(hours=1)
HISTORY_MIN_ROWS = 4
# The horizon counts back from the newest row's time rounded down to this, so the write script
# trims a key's older rows only when its newest row enters a new minute (trimming at every
# row was ~30% of the script's Redis time); a key keeps up to a minute's rows more.
HISTORY_GRANULE = timedelta(minutes=1)
# Keys outlive their TTL by this much. Expiry only reclaims memory: the reader applies the TTL
# against the request's own event time. The grace keeps a row readable for requests scored
# after the fact (a replay of held-out days, a backtest through the service, a late request)
# that would still have seen it at their event time.
EXPIRY_MARGIN_MS = 7 * 86_400_000
# A row's expiry counts from the end of the hour of its feature_time, so the write script moves
# a key's expiry only when its newest row enters a new hour (``PEXPIREAT`` was ~5 of the ~35
# Redis calls per streamed event).
EXPIRY_GRANULE_MS = 3_600_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def online_key(group: FeatureGroup, entity_key: str) -> str:
    return f"{key_prefix(group)}{entity_key}{KEY_SUFFIX}"


def key_prefix(group: FeatureGroup) -> str:
    """The key of an entity is this, its entity key, then ``KEY_SUFFIX``: of the group whose
    rows serve ``group`` (``shared.storage_host``: a later version of it holding its columns)."""
    host = storage_host(group)
    return f"fp:{ONLINE_LAYOUT_VERSION}:{host.name}:v{host.version}:{{{host.entity.name}:"


KEY_SUFFIX = "}"


def to_micros(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(0, 0, value)  # positional: twice as fast as microseconds=


def json_text(name: str, dtype: str, all_null: bool = False) -> pl.Expr:
    """The JSON text of feature column ``name`` (``null`` where null; ``all_null``: the column
    is of polars' Null dtype, which casts cannot take)."""
    col = pl.col(name)
    if all_null:
        return pl.lit("null")
    if dtype == "float":
        text = _float_text(col)
    elif dtype in ("ilist", "flist"):  # the window profiles of windows.py: JSON arrays
        element = pl.element()
        element = (
            element.cast(pl.Int64).cast(pl.String) if dtype == "ilist" else _float_text(element)
        )
        text = pl.concat_str(pl.lit("["), col.list.eval(element).list.join(","), pl.lit("]"))
    elif dtype == "int":
        text = col.cast(pl.Int64).cast(pl.String)
    elif dtype == "fixed":  # the exact prefix totals of windows.py: JSON integers of any size
        text = col.cast(pl.Int128).cast(pl.String)
    elif dtype == "ts":
        text = col.dt.epoch("us").cast(pl.String)
    else:  # str: JSON-escaped by encoding a one-field struct {"s":...} and cutting the braces
        encoded = pl.struct(col.cast(pl.String).alias("s")).struct.json_encode()
        text = encoded.str.slice(5, encoded.str.len_chars() - 6)
    return text.fill_null(pl.lit("null"))


def _float_text(value: pl.Expr) -> pl.Expr:
    value = value.cast(pl.Float64)
    return (
        pl.when(value.is_infinite())
        .then(pl.when(value > 0).then(pl.lit("Infinity")).otherwise(pl.lit("-Infinity")))
        .otherwise(value.cast(pl.String))  # shortest round-trip text, NaN as "NaN"
    )


def encode_rows(
    group: FeatureGroup, latest_rows: pl.DataFrame, version: pl.Expr | int = 0
) -> pl.DataFrame:
    """``key``, ``score`` (feature_time, epoch us), ``version``, ``value`` (the JSON member),
    ``pxat`` (expiry, epoch ms) and ``retain`` (the group's keep-rule arguments for the write
    script, ``history.retain_text``) of each row, vectorised. ``version`` is the writer_version (an
    int, or an expression over ``latest_rows``).

    Raises ``ValueError`` if an entity key or a feature_time is null.
    """
    return check_encoded(group, encode_query(group, latest_rows, version).collect())


def encode_query(
    group: FeatureGroup,
    rows: pl.DataFrame | pl.LazyFrame,
    version: pl.Expr | int = 0,
    *,
    typed: bool = False,
) -> pl.LazyFrame:
    """``encode_rows`` as a lazy query, without the null check (``check_encoded``). ``typed``:
    every feature column has its declared dtype (none of polars' Null dtype, as the rows of
    ``compute``/``targeted``), so the query's schema is not resolved (~2 ms per stream group
    and checkpoint, a tenth of a 60-event checkpoint's query building)."""
    from fraud_platform.lib.features.online.history import retain_text  # history imports us

    if hosted(group):  # its keys hold the host's members: a row of its own would replace one
        host = storage_host(group).versioned_name
        raise ValueError(f"{group.versioned_name} is served from {host}'s online rows: write those")

    rows = rows.lazy()
    ttl_ms = int(group.ttl.total_seconds() * 1000)
    ft_us = pl.col(FEATURE_TIME).dt.epoch("us")
    stored = stored_group(group)
    if typed:
        nulls = (False,) * len(stored.features)
    else:
        schema = rows.collect_schema()
        nulls = tuple(schema[f.name] == pl.Null for f in stored.features)
    parts = list(_member_parts(stored, nulls))
    version_expr = pl.lit(version, pl.Int64) if isinstance(version, int) else version
    parts += [pl.lit(","), version_expr.cast(pl.Int64).cast(pl.String), pl.lit("]")]
    return rows.select(
        key=pl.concat_str(
            [pl.lit(key_prefix(group)), pl.col(ENTITY_KEY).cast(pl.String), pl.lit(KEY_SUFFIX)]
        ),
        score=ft_us,
        version=version_expr.cast(pl.Int64),
        value=pl.concat_str(parts),
        pxat=(ft_us // 1000 // EXPIRY_GRANULE_MS + 1) * EXPIRY_GRANULE_MS
        + (ttl_ms + EXPIRY_MARGIN_MS),
        retain=pl.lit(retain_text(group)),
    )


def _member_parts(group: FeatureGroup, nulls: tuple[bool, ...]) -> tuple[pl.Expr, ...]:
    """The member's text up to its features (``nulls``: which feature columns are of dtype
    Null), built once per group object: the stream worker encodes every group at every
    checkpoint, and building these expressions was ~3 of the 6 ms it spent building its
    ``encode_query`` calls per checkpoint (``json_text``: 3.2 ms)."""

    def build() -> tuple[pl.Expr, ...]:
        parts: list[pl.Expr] = [pl.lit("["), pl.col(FEATURE_TIME).dt.epoch("us").cast(pl.String)]
        for feature, null in zip(group.features, nulls, strict=True):
            # an at-lookup feature is evaluated from the hidden columns at the lookup: its
            # value as of the row is never read, so never stored
            text = (
                pl.lit("null")
                if at_lookup(feature)
                else json_text(feature.name, feature.dtype, null)
            )
            parts += [pl.lit(","), text]
        return tuple(parts)

    return per_group(_PARTS, group, nulls, build)


_PARTS: dict = {}


def check_encoded(group: FeatureGroup, encoded: pl.DataFrame) -> pl.DataFrame:
    """``encoded`` if no row lacks its key or expiry (a null entity key or feature_time)."""
    nulls = encoded.select(pl.col("key", "pxat").null_count()).row(0)
    if any(nulls):
        raise ValueError(
            f"{group.versioned_name}: {nulls[0]} rows without {ENTITY_KEY}, "
            f"{nulls[1]} without {FEATURE_TIME}"
        )
    return encoded
