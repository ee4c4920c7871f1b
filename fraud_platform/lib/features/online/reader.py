"""The online reader: a feature service's groups for one set of entities in ONE Redis call
(on a Redis Cluster: one call per entity, pipelined: one round trip per node, in parallel).

One Lua script call (``READ_ROWS_LUA``) takes the keys of every group the service pins
(layout.py), also for many entities at once (``get_online_features_many``), and returns, per
key, the latest row with ``feature_time < now`` within the group's TTL
(``ZREVRANGEBYSCORE key (now now-ttl LIMIT 0 1``): the point-in-time row, even while newer rows
of the entity (the transaction being scored, later events) are already stored. The rows are
parsed as one JSON array and the TTL and "strictly before" rule are checked again here, so
what it serves equals the offline point-in-time join.
"""

from __future__ import annotations

import json
import json.scanner
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import redis

from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.layout import (
    EPOCH,
    KEY_SUFFIX,
    ONLINE_LAYOUT_VERSION,
    key_prefix,
    to_micros,
)
from fraud_platform.lib.features.online.scripts import PipelinedScript, slot_of
from fraud_platform.lib.features.registry import FeatureGroup, FeatureService


@dataclass
class OnlineFeatures:
    """Everything one scoring request needs, with each group's freshness."""

    values: dict[str, Any]
    feature_times: dict[str, datetime | None]
    age_seconds: dict[str, float | None] = field(default_factory=dict)

    @property
    def missing_groups(self) -> list[str]:
        return [name for name, ft in self.feature_times.items() if ft is None]


# KEYS: the rows' keys. ARGV: now (epoch us), then per key the oldest feature_time in its TTL.
READ_ROWS_LUA = """
local now = '(' .. ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
  local rows = redis.call('ZREVRANGEBYSCORE', key, now, ARGV[i + 1], 'LIMIT', 0, 1)
  out[i] = rows[1] or false
end
return out
"""

# The C scanner behind json.loads, called directly: (value, end) of the JSON text at an index.
_scan_json = json.scanner.make_scanner(json.JSONDecoder())


class _GroupLayout(NamedTuple):
    name: str  # versioned name
    prefix: str  # of its keys
    join_keys: tuple[str, ...]
    ttl_us: int
    features: tuple[str, ...]  # in stored order
    nulls: tuple[None, ...]  # one per feature


def _parse_rows(raw_values: Sequence[bytes | str | None], count: int) -> list[Any]:
    """The stored rows (None where absent), parsed as ONE JSON array: one C call, not ``count``."""
    try:
        joined = b",".join([b"null" if raw is None else raw for raw in raw_values]).decode()
    except TypeError:  # str values: a client with decode_responses=True
        joined = ",".join(["null" if raw is None else str(raw) for raw in raw_values])
    text = f"[{joined}]"
    try:
        rows, end = _scan_json(text, 0)
    except (ValueError, StopIteration) as exc:  # the C scanner raises both
        raise ValueError(f"not online rows of layout {ONLINE_LAYOUT_VERSION}: {exc!r}") from None
    if end != len(text) or len(rows) != count:
        raise ValueError(f"not online rows of layout {ONLINE_LAYOUT_VERSION}: {text[:120]!r}")
    return rows


def raise_wrong_type(exc: redis.ResponseError) -> None:
    """A WRONGTYPE reply to the script as what it means here (else nothing)."""
    if "WRONGTYPE" in str(exc):
        raise ValueError(
            f"not online rows of layout {ONLINE_LAYOUT_VERSION}: a key is not a sorted set ({exc})"
        ) from None


class OnlineFeatureReader:
    """Fetches a feature service's groups for one set of entities in ONE Redis round trip."""

    def __init__(self, client: redis.Redis, service: FeatureService) -> None:
        self._client = client
        self.service = service
        self._groups: Sequence[FeatureGroup] = service.groups
        self._layout = [
            _GroupLayout(
                name=group.versioned_name,
                prefix=key_prefix(group),
                join_keys=tuple(group.entity.join_keys),
                ttl_us=group.ttl // timedelta(microseconds=1),
                features=tuple(group.feature_names),
                nulls=(None,) * len(group.features),
            )
            for group in self._groups
        ]
        self._script = client.register_script(READ_ROWS_LUA)
        self._slot_scripts = PipelinedScript(client, READ_ROWS_LUA)  # used on a Redis Cluster
        self._feature_names = [name for layout in self._layout for name in layout.features]
        dtypes = [f.dtype for group in self._groups for f in group.features]
        self._ts_positions = [i for i, dtype in enumerate(dtypes) if dtype == "ts"]

    def keys_for(self, entities: Mapping[str, Any]) -> list[str | None]:
        """Each group's key; None where a join key is null (no entity: nothing to fetch)."""
        keys: list[str | None] = []
        for layout in self._layout:
            if len(layout.join_keys) == 1:
                part = entities.get(layout.join_keys[0])
                keys.append(None if part is None else f"{layout.prefix}{part}{KEY_SUFFIX}")
                continue
            parts = [entities.get(k) for k in layout.join_keys]
            if any(part is None for part in parts):
                keys.append(None)
            else:
                keys.append(layout.prefix + KEY_SEPARATOR.join(map(str, parts)) + KEY_SUFFIX)
        return keys

    def get_online_features(
        self, entities: Mapping[str, Any], now: datetime | None = None
    ) -> OnlineFeatures:
        """Values known for ``entities`` (a mapping with every join key) as of ``now``.

        A group whose row is older than its TTL at ``now`` is null, exactly as offline; so is a
        group whose join key is null in ``entities`` (e.g. the counterparty of a card payment).
        """
        now = now or datetime.now(UTC)
        keys = self.keys_for(entities)
        return self.result(keys, self._fetch(keys, len(self._layout), now), now)

    def script_call(
        self, entities: Mapping[str, Any], now: datetime
    ) -> tuple[list[str | None], list[str], list[int]]:
        """What ``get_online_features(entities, now)`` asks Redis, for a caller that sends it
        itself (``EVALSHA script_sha len(wanted) *wanted *args``, no Redis Cluster): each
        group's key (None where a join key is null), the script's KEYS (empty: nothing to ask)
        and ARGV. ``result(keys, reply, now)`` then reads the reply."""
        keys = self.keys_for(entities)
        return (keys, *self._script_args(keys, len(self._layout), now))

    @property
    def script_sha(self) -> str:
        return self._script.sha

    @property
    def cluster(self) -> bool:
        return self._slot_scripts.cluster

    def result(
        self, keys: Sequence[str | None], fetched: Sequence[Any], now: datetime
    ) -> OnlineFeatures:
        """The features of one entity set from its groups' ``keys`` and the script's reply
        (one row per non-None key)."""
        rows = iter(fetched)
        return self._decode([next(rows) if key is not None else None for key in keys], now)

    def fetch(self, keys: Sequence[str | None], now: datetime) -> list[Any]:
        """The script's reply for one entity set's ``keys``, through the client."""
        return self._fetch(keys, len(self._layout), now)

    def _fetch(self, keys: Sequence[str | None], width: int, now: datetime) -> list[Any]:
        """The point-in-time row of each non-None key (None where none), in one script call.
        ``keys`` are ``width`` per entity set, in the layout's group order."""
        wanted, args = self._script_args(keys, width, now)
        if not wanted:
            return []
        try:
            if self._slot_scripts.cluster:
                return self._fetch_by_slot(wanted, args)
            return self._script(keys=wanted, args=args)
        except redis.ResponseError as exc:
            raise_wrong_type(exc)
            raise

    def _script_args(
        self, keys: Sequence[str | None], width: int, now: datetime
    ) -> tuple[list[str], list[int]]:
        """The script's KEYS (the non-None ``keys``, ``width`` per entity set) and ARGV (now,
        then each key's oldest row time within its group's TTL)."""
        now_us = to_micros(now)
        wanted: list[str] = []
        args: list[int] = [now_us]
        for i, key in enumerate(keys):
            if key is not None:
                wanted.append(key)
                args.append(now_us - self._layout[i % width].ttl_us)
        return wanted, args

    def _fetch_by_slot(self, keys: list[str], args: list[int]) -> list[Any]:
        """``_fetch`` on a Redis Cluster: one script call per hash slot (one per entity, the
        layout's hash tag), all in one pipeline: one round trip per node, the nodes in
        parallel (at most the cluster's primary count, 3 here, for one request)."""
        by_slot: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            by_slot.setdefault(slot_of(key), []).append(position)
        calls = [
            ([keys[i] for i in positions], [args[0], *(args[i + 1] for i in positions)])
            for positions in by_slot.values()
        ]
        rows: list[Any] = [None] * len(keys)
        results = self._slot_scripts.run(calls, calls_per_pipeline=len(calls))
        for positions, found in zip(by_slot.values(), results, strict=True):
            for position, row in zip(positions, found, strict=True):
                rows[position] = row
        return rows

    def get_online_features_many(
        self, entities: Sequence[Mapping[str, Any]], now: datetime | None = None
    ) -> list[OnlineFeatures]:
        """``get_online_features`` for several entity sets, all in ONE ``MGET``."""
        now = now or datetime.now(UTC)
        width = len(self._layout)
        keys = [key for ents in entities for key in self.keys_for(ents)]
        fetched = iter(self._fetch(keys, width, now))
        raw = [next(fetched) if key is not None else None for key in keys]
        rows = _parse_rows(raw, len(raw))  # one parse for all entities
        return [self._decode_rows(rows[i : i + width], now) for i in range(0, len(rows), width)]

    def _decode(self, raw_values: Sequence[bytes | str | None], now: datetime) -> OnlineFeatures:
        """One entity set's stored values (one per group, None if absent) as of ``now``.

        JSON gives floats as floats (polars writes them with a "." or an exponent), ints and
        strings as such; only timestamps need converting.
        """
        return self._decode_rows(_parse_rows(raw_values, len(self._layout)), now)

    def _decode_rows(self, rows: Sequence[list[Any] | None], now: datetime) -> OnlineFeatures:
        flat: list[Any] = []  # every feature of every group, in self._feature_names order
        feature_times: dict[str, datetime | None] = {}
        ages: dict[str, float | None] = {}
        now_us = to_micros(now)
        epoch, delta = EPOCH, timedelta  # from_micros inlined: ~20 calls per entity
        for (name, _, _, ttl_us, features, nulls), row in zip(self._layout, rows, strict=True):
            if row is not None and (
                type(row) is not list
                or len(row) != len(features) + 2
                or type(row[0]) is not int
                or type(row[-1]) is not int
            ):
                raise ValueError(f"{name}: not a stored row of {len(features)} features: {row!r}")
            # absent, from the future of `now`, or expired: not visible
            if row is None or row[0] >= now_us or now_us - row[0] > ttl_us:
                feature_times[name] = ages[name] = None
                flat += nulls
                continue
            feature_times[name] = epoch + delta(0, 0, row[0])
            ages[name] = (now_us - row[0]) / 1_000_000
            flat += row[1:-1]  # without feature_time and writer_version
        for position in self._ts_positions:
            if (micros := flat[position]) is not None:
                flat[position] = epoch + delta(0, 0, micros)
        return OnlineFeatures(
            values=dict(zip(self._feature_names, flat, strict=True)),
            feature_times=feature_times,
            age_seconds=ages,
        )
