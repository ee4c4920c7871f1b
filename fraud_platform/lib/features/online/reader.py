"""The online reader: a feature service's groups for one set of entities in ONE Redis call
(on a Redis Cluster: one call per entity, pipelined: one round trip per node, in parallel).

One Lua script call (``READ_ROWS_LUA``) takes the keys of every group the service pins
(layout.py), also for many entities at once (``get_online_features_many``), and returns, per
key, the latest row with ``feature_time < now`` within the group's TTL
(``ZREVRANGEBYSCORE key (now now-ttl LIMIT 0 1``): the point-in-time row, even while newer rows
of the entity (the transaction being scored, later events) are already stored; and, for a
group with windows evaluated at the lookup (``windows.py``), the latest row at or before each
window's start (``ZREVRANGEBYSCORE key b -inf LIMIT 0 1``), whose prefix totals the window
subtracts; windowed maxima, minima and distinct counts come from the point-in-time row's
profiles (``profiles.py``) alone. The rows are parsed as one JSON array and the TTL and "strictly before" rule are
checked again here, so what it serves equals the offline point-in-time join.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.layout import (
    EPOCH,
    KEY_SUFFIX,
    ONLINE_LAYOUT_VERSION,
    to_micros,
)
from fraud_platform.lib.features.online.read_rows import (
    at_lookup_values,
    group_layout,
    parse_rows,
    window_starts_us,
)
from fraud_platform.lib.features.online.scripts import PipelinedScript, packed_command, slot_of
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


# KEYS: the rows' keys. ARGV: now (epoch us), then per key: the oldest feature_time in its
# TTL, how many window starts, the starts. Returns per key its point-in-time row, then the row
# at or before each start: false where there is none, and where it is the point-in-time row
# itself (a start at or after that row: the reader knows it is the row, and the window empty).
# A key with windows is read two rows deep at once: where the row before the point-in-time row
# is at or before a start, it is that start's row, with no call of its own (each redis.call
# costs Redis ~2-4 us; a lookup of the load benchmark's rows made 22 calls, now 8).
READ_ROWS_LUA = """
local now = '(' .. ARGV[1]
local out = {}
local at = 2
for _, key in ipairs(KEYS) do
  local starts = tonumber(ARGV[at + 1])
  local rows
  if starts == 0 then
    rows = redis.call('ZREVRANGEBYSCORE', key, now, ARGV[at], 'WITHSCORES', 'LIMIT', 0, 1)
  else
    rows = redis.call('ZREVRANGEBYSCORE', key, now, '-inf', 'WITHSCORES', 'LIMIT', 0, 2)
  end
  local score = rows[2] and tonumber(rows[2])
  if score and score < tonumber(ARGV[at]) then
    score = nil
  end
  out[#out + 1] = score and rows[1] or false
  local previous = rows[4] and tonumber(rows[4])
  for j = 1, starts do
    local start = ARGV[at + 1 + j]
    local before = false
    if score and rows[3] and tonumber(start) < score then  -- no older row: none at the start
      if previous <= tonumber(start) then
        before = rows[3]
      else
        before = redis.call('ZREVRANGEBYSCORE', key, start, '-inf', 'LIMIT', 0, 1)[1] or false
      end
    end
    out[#out + 1] = before
  end
  at = at + 2 + starts
end
return out
"""


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
        self._layout = [group_layout(group) for group in self._groups]
        self._script = client.register_script(READ_ROWS_LUA)
        self._slot_scripts = PipelinedScript(client, READ_ROWS_LUA)  # used on a Redis Cluster
        self._feature_names = [name for layout in self._layout for name in layout.declared]
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

    def packed_script_call(
        self, entities: Mapping[str, Any], now: datetime
    ) -> tuple[list[str | None], bytes | None]:
        """``script_call`` as one packed ``EVALSHA`` command (None: nothing to ask)."""
        keys, wanted, args = self.script_call(entities, now)
        if not wanted:
            return keys, None
        return keys, packed_command("EVALSHA", self._script.sha, len(wanted), *wanted, *args)

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
        (per non-None key: its row, then its window start rows)."""
        return self._decode_rows(self._rows_per_key(keys, fetched), now)

    def _rows_per_key(
        self, keys: Sequence[str | None], fetched: Sequence[Any]
    ) -> list[list[Any] | None]:
        """The reply's rows parsed (one JSON parse), per key: [row, *start rows] (None for a
        None key)."""
        width = len(self._layout)
        parsed = parse_rows(fetched, len(fetched))
        per_key: list[list[Any] | None] = []
        at = 0
        for i, key in enumerate(keys):
            if key is None:
                per_key.append(None)
                continue
            end = at + 1 + len(self._layout[i % width].windows)
            per_key.append(parsed[at:end])
            at = end
        if at != len(parsed):
            raise ValueError(f"{len(parsed)} rows in the reply for {at}")
        return per_key

    def fetch(self, keys: Sequence[str | None], now: datetime) -> list[Any]:
        """The script's reply for one entity set's ``keys``, through the client."""
        return self._fetch(keys, len(self._layout), now)

    def _fetch(self, keys: Sequence[str | None], width: int, now: datetime) -> list[Any]:
        """Per non-None key its point-in-time row and window start rows (None where none), in
        one script call. ``keys`` are ``width`` per entity set, in the layout's group order."""
        wanted, per_key = self._key_args(keys, width, now)
        if not wanted:
            return []
        try:
            if self._slot_scripts.cluster:
                return self._fetch_by_slot(wanted, per_key, now)
            args = [to_micros(now), *(arg for key_args in per_key for arg in key_args)]
            return self._script(keys=wanted, args=args)
        except redis.ResponseError as exc:
            raise_wrong_type(exc)
            raise

    def _script_args(
        self, keys: Sequence[str | None], width: int, now: datetime
    ) -> tuple[list[str], list[int]]:
        """The script's KEYS (the non-None ``keys``, ``width`` per entity set) and ARGV (now,
        then per key its oldest row time within its group's TTL and its window starts)."""
        wanted, per_key = self._key_args(keys, width, now)
        return wanted, [to_micros(now), *(arg for key_args in per_key for arg in key_args)]

    def _key_args(
        self, keys: Sequence[str | None], width: int, now: datetime
    ) -> tuple[list[str], list[list[int]]]:
        now_us = to_micros(now)
        per_group = [
            [now_us - layout.ttl_us, len(layout.windows), *window_starts_us(layout, now_us)]
            for layout in self._layout
        ]
        wanted: list[str] = []
        per_key: list[list[int]] = []
        for i, key in enumerate(keys):
            if key is not None:
                wanted.append(key)
                per_key.append(per_group[i % width])
        return wanted, per_key

    def _fetch_by_slot(self, keys: list[str], per_key: list[list[int]], now: datetime) -> list[Any]:
        """``_fetch`` on a Redis Cluster: one script call per hash slot (one per entity, the
        layout's hash tag), all in one pipeline: one round trip per node, the nodes in
        parallel (at most the cluster's primary count, 3 here, for one request)."""
        by_slot: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            by_slot.setdefault(slot_of(key), []).append(position)
        now_us = to_micros(now)
        calls = [
            (
                [keys[i] for i in positions],
                [now_us, *(arg for i in positions for arg in per_key[i])],
            )
            for positions in by_slot.values()
        ]
        replies: list[list[Any]] = [[] for _ in keys]
        results = self._slot_scripts.run(calls, calls_per_pipeline=len(calls))
        for positions, found in zip(by_slot.values(), results, strict=True):
            found = iter(found)
            for position in positions:
                replies[position] = [next(found) for _ in range(per_key[position][1] + 1)]
        return [row for reply in replies for row in reply]

    def get_online_features_many(
        self, entities: Sequence[Mapping[str, Any]], now: datetime | None = None
    ) -> list[OnlineFeatures]:
        """``get_online_features`` for several entity sets, all in ONE script call."""
        now = now or datetime.now(UTC)
        width = len(self._layout)
        keys = [key for ents in entities for key in self.keys_for(ents)]
        rows = self._rows_per_key(keys, self._fetch(keys, width, now))  # one parse for all
        return [self._decode_rows(rows[i : i + width], now) for i in range(0, len(rows), width)]

    def _decode_rows(self, rows: Sequence[list[Any] | None], now: datetime) -> OnlineFeatures:
        """One entity set's stored rows (per group: [row, *window start rows], None if no key)
        as of ``now``. JSON gives floats as floats (polars writes them with a "." or an
        exponent), ints and strings as such; only timestamps need converting."""
        flat: list[Any] = []  # every feature of every group, in self._feature_names order
        feature_times: dict[str, datetime | None] = {}
        ages: dict[str, float | None] = {}
        now_us = to_micros(now)
        epoch, delta = EPOCH, timedelta  # from_micros inlined: ~20 calls per entity
        for layout, found in zip(self._layout, rows, strict=True):
            name = layout.name
            row = None if found is None else found[0]
            if found is not None:
                for stored in found:
                    if stored is not None and (
                        type(stored) is not list
                        or len(stored) != layout.width
                        or type(stored[0]) is not int
                        or type(stored[-1]) is not int
                    ):
                        raise ValueError(
                            f"{name}: not a stored row of {layout.width - 2} columns: {stored!r}"
                        )
            # absent, from the future of `now`, or expired: not visible
            if row is None or row[0] >= now_us or now_us - row[0] > layout.ttl_us:
                feature_times[name] = ages[name] = None
                flat += layout.nulls
                continue
            feature_times[name] = epoch + delta(0, 0, row[0])
            ages[name] = (now_us - row[0]) / 1_000_000
            if layout.lookups or layout.profiles:
                values = at_lookup_values(layout, row, found[1:], now_us)
            else:
                values = row[1 : len(layout.features) + 1]
            if layout.project is None:
                flat += values
            else:  # another group's rows (``storage_host``): this group's features of them
                flat += [values[i] for i in layout.project]
        for position in self._ts_positions:
            if (micros := flat[position]) is not None:
                flat[position] = epoch + delta(0, 0, micros)
        return OnlineFeatures(
            values=dict(zip(self._feature_names, flat, strict=True)),
            feature_times=feature_times,
            age_seconds=ages,
        )
