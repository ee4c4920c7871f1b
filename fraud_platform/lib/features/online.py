"""The online store: latest feature values per entity in Redis.

Key layout (version ``ONLINE_LAYOUT_VERSION``)::

    fp:<layout>:<group name>:v<group version>:<entity key>   ->  hash

Hash fields: one per non-null feature, plus ``_ft`` (feature_time, epoch microseconds).
Values: ints and floats as decimal text (floats via ``repr``: exact round trip), timestamps as
epoch microseconds, strings as is. A null feature has no field. Keys expire ``ttl`` after
their feature_time. Because the group version is in the key, a new version of a group is
written beside the old one, and a model pinned to the old version keeps reading it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import redis

from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.registry import (
    ENTITY_KEY,
    FEATURE_TIME,
    Dtype,
    FeatureGroup,
    FeatureService,
)

ONLINE_LAYOUT_VERSION = 1
FEATURE_TIME_FIELD = "_ft"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def online_key(group: FeatureGroup, entity_key: str) -> str:
    return f"fp:{ONLINE_LAYOUT_VERSION}:{group.name}:v{group.version}:{entity_key}"


def to_micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def _encode(value: Any, dtype: Dtype) -> str:
    if dtype == "ts":
        return str(to_micros(value))
    if dtype == "float":
        return repr(float(value))
    return str(value)


def _decode(raw: bytes, dtype: Dtype) -> Any:
    text = raw.decode()
    if dtype == "float":
        return float(text)
    if dtype == "int":
        return int(text)
    if dtype == "ts":
        return from_micros(int(text))
    return text


def write_snapshot(
    client: redis.Redis,
    group: FeatureGroup,
    latest_rows: pl.DataFrame,
    *,
    batch_size: int = 5_000,
) -> int:
    """Write each entity's latest row; returns the number of keys written.

    Each key is replaced whole (DEL then HSET in one MULTI), so a feature that became null
    does not leave a stale value behind, and readers never see half a row.
    """
    names = group.feature_names
    dtypes = {f.name: f.dtype for f in group.features}
    ttl_ms = int(group.ttl.total_seconds() * 1000)
    written = 0
    columns = [ENTITY_KEY, FEATURE_TIME, *names]
    for batch in latest_rows.select(columns).iter_slices(batch_size):
        pipe = client.pipeline(transaction=True)
        for row in batch.iter_rows():
            key = online_key(group, row[0])
            feature_micros = to_micros(row[1])
            mapping = {FEATURE_TIME_FIELD: str(feature_micros)}
            for name, value in zip(names, row[2:], strict=True):
                if value is not None:
                    mapping[name] = _encode(value, dtypes[name])
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.pexpireat(key, feature_micros // 1000 + ttl_ms + 1_000)
        pipe.execute()
        written += batch.height
    return written


@dataclass
class OnlineFeatures:
    """Everything one scoring request needs, with each group's freshness."""

    values: dict[str, Any]
    feature_times: dict[str, datetime | None]
    age_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def missing_groups(self) -> list[str]:
        return [name for name, ft in self.feature_times.items() if ft is None]


class OnlineFeatureReader:
    """Fetches a feature service's groups for one set of entities in ONE Redis round trip."""

    def __init__(self, client: redis.Redis, service: FeatureService) -> None:
        self._client = client
        self._groups: Sequence[FeatureGroup] = service.groups
        self._dtypes = {
            group.versioned_name: {f.name: f.dtype for f in group.features}
            for group in self._groups
        }

    def keys_for(self, entities: Mapping[str, Any]) -> list[str | None]:
        """Each group's key; None where a join key is null (no entity: nothing to fetch)."""
        keys: list[str | None] = []
        for group in self._groups:
            parts = [entities.get(k) for k in group.entity.join_keys]
            if any(part is None for part in parts):
                keys.append(None)
            else:
                keys.append(online_key(group, KEY_SEPARATOR.join(map(str, parts))))
        return keys

    def get_online_features(
        self, entities: Mapping[str, Any], now: datetime | None = None
    ) -> OnlineFeatures:
        """Values known for ``entities`` (a mapping with every join key) as of ``now``.

        A group whose row is older than its TTL at ``now`` is null, exactly as offline; so is a
        group whose join key is null in ``entities`` (e.g. the counterparty of a card payment).
        """
        keys = self.keys_for(entities)
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            if key is not None:
                pipe.hgetall(key)
        fetched = iter(pipe.execute())
        raw_rows = [next(fetched) if key is not None else {} for key in keys]
        now = now or datetime.now(UTC)
        return self._decode(raw_rows, now)

    def _decode(self, raw_rows: Iterable[dict[bytes, bytes]], now: datetime) -> OnlineFeatures:
        values: dict[str, Any] = {}
        feature_times: dict[str, datetime | None] = {}
        ages: dict[str, float | None] = {}
        for group, raw in zip(self._groups, raw_rows, strict=True):
            dtypes = self._dtypes[group.versioned_name]
            ft_raw = raw.get(FEATURE_TIME_FIELD.encode())
            feature_time = from_micros(int(ft_raw)) if ft_raw is not None else None
            if feature_time is not None and (feature_time >= now or now - feature_time > group.ttl):
                feature_time = None  # from the future of `now`, or expired: not visible
            feature_times[group.versioned_name] = feature_time
            ages[group.versioned_name] = (
                (now - feature_time).total_seconds() if feature_time is not None else None
            )
            for name, dtype in dtypes.items():
                cell = raw.get(name.encode()) if feature_time is not None else None
                values[name] = _decode(cell, dtype) if cell is not None else None
        return OnlineFeatures(values=values, feature_times=feature_times, age_seconds=ages)


def wait_for_redis(client: redis.Redis, timeout_s: float = 5.0) -> None:
    """Raise a clear error if Redis does not answer within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            last_error = exc
            time.sleep(0.1)
    raise ConnectionError(f"Redis not reachable: {last_error}")
