"""Writes feature rows online (layout.py) through ONE Lua script that compares on feature_time.

Both writers of the online store go through ``write_rows``: the batch snapshot
(``write_snapshot``: ``snapshot.snapshot_rows`` of each entity, writer_version 0) and the
stream worker (``lib/streaming``: every row of the events it applied, writer_version = the
entity's event counter). The script runs atomically in Redis, so the two never fight:

* a row goes to its own feature_time (its score): an older row can never replace or hide a
  newer one, whatever order the writes land in;
* at the same feature_time the stored row is replaced only by a writer_version at least as
  high (the stream's rows, computed from more events, win over an older computation; the batch
  snapshot replaces only a batch row);
* the entity keeps the rows ``history.online_history`` keeps of every row written to it (the
  rows a lookup up to ``HISTORY_HORIZON`` before its newest row's minute reads, at least
  ``HISTORY_MIN_ROWS``; older rows are trimmed when the newest row enters a new minute), and
  the key expires ``ttl`` + 7 days after the end of its newest row's hour
  (``EXPIRY_GRANULE_MS``: the script moves it only when the newest row enters a new hour; a
  key written before expiries were rounded may expire up to an hour sooner).

Each script call takes ``CHUNK_ROWS`` rows (one round trip per call, calls pipelined). Measured
here: ~150k rows/s for single-row keys (``benchmarks/snapshot.py``); layout 2's plain ``SET``
written over a raw socket reached a few hundred thousand, but could not compare.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
import redis

from fraud_platform.lib.features.online.layout import (
    EXPIRY_GRANULE_MS,
    HISTORY_GRANULE,
    HISTORY_HORIZON,
    HISTORY_MIN_ROWS,
    encode_rows,
)
from fraud_platform.lib.features.online.scripts import (
    PipelinedScript,
    ScriptCall,
    keyed_calls,
    packed_evalsha,
    resp_bulk,
    slot_of,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.windows import stored_group

DEFAULT_BATCH_SIZE = 25000
CHUNK_ROWS = 500  # rows per script call: long enough to amortise the call, short for latency
CALLS_PER_PIPELINE = 20
# On a cluster a call holds one slot's keys (usually one entity's): more calls per round trip.
CLUSTER_CALLS_PER_PIPELINE = 2000

# KEYS: one per entity. ARGV: horizon_us, min_rows, then per key: row count, pxat (the
# latest expiry of its rows), the number of at-lookup windows, (window_us, granule_us) of each,
# then per row: score, version, member.
# Returns how many rows were stored (the others lost the comparison).
#
# The keep rule (history.py) is applied incrementally: with the key's rows before the call all
# kept relative to its newest time N1 (and dropped rows never needed again), only these can be
# dropped after it: the new rows and the rows before them (their successor changed), the rows
# that fell out of the HISTORY_MIN_ROWS newest, and the rows whose successor lies where a
# threshold moved from N1 to N2: [N1 - H, N2 - H) and, per window, (b_w(N1 - H), b_w(N2 - H)],
# N1 and N2 the key's newest times before and after rounded down to HISTORY_GRANULE. In the
# stream's usual call (rows newer than the key's, in the minute of its newest) nothing moved: a
# ZCOUNT; a band is read only when N moved to a new minute, a window's only when b_w moved to a
# new granule.
WRITE_ROWS_LUA = """
local horizon = tonumber(ARGV[1])
local min_rows = tonumber(ARGV[2])
local granule_us = GRANULE_US
local trim_us = TRIM_US
local stored = 0
local at = 3

-- ceil(x / g), exact: the integers (< 2^53) and their products are exact doubles, only the
-- division rounds (by less than one)
local function ceil_div(x, g)
  local q = math.floor(x / g)
  if q * g < x then q = q + 1 end
  if (q - 1) * g >= x then q = q - 1 end
  return q
end

-- floor(x / g), exact (as ceil_div)
local function floor_div(x, g)
  local q = math.floor(x / g)
  if q * g > x then q = q - 1 end
  if (q + 1) * g <= x then q = q + 1 end
  return q
end

-- '%.0f': Lua's tostring ('%.14g') rounds a 16-digit microsecond time to 100 us
local function fmt(x) return string.format('%.0f', x) end

-- the key being trimmed (set per key; functions defined once, not per key)
local key, nwin, start, t_min
local ws, gs, bounds, drop = {}, {}, {}, {}

-- history.py's rule for the row at ft whose successor is at succ: drop it unless kept
local function check(member, ft, succ)
  if succ == nil or ft >= t_min or succ >= start then return end
  for i = 1, nwin do
    local g = gs[i]
    if succ > bounds[i] and ceil_div(ft, g) ~= ceil_div(succ, g) then return end
  end
  drop[#drop + 1] = member  -- removed at the end: decisions do not depend on each other
end

-- check the rows whose successor's time is in [lo, hi]
local function band(lo, hi)
  if lo > hi then return end
  local rows = redis.call('ZRANGEBYSCORE', key, fmt(lo), fmt(hi), 'WITHSCORES')
  if #rows == 0 then return end
  local prev = redis.call('ZREVRANGEBYSCORE', key, '(' .. fmt(lo), '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #prev > 0 then check(prev[1], tonumber(prev[2]), tonumber(rows[2])) end
  for i = 1, #rows - 2, 2 do check(rows[i], tonumber(rows[i + 1]), tonumber(rows[i + 3])) end
end

for _, k in ipairs(KEYS) do
  key = k
  local count = tonumber(ARGV[at])
  local pxat = ARGV[at + 1]
  nwin = tonumber(ARGV[at + 2])
  at = at + 3
  for i = 1, nwin do
    ws[i] = tonumber(ARGV[at])
    gs[i] = tonumber(ARGV[at + 1])
    at = at + 2
  end
  local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  local n1 = nil
  if #top > 0 then n1 = tonumber(top[2]) end
  local n2 = n1
  local changed = false
  local new_scores, new_members = {}, {}
  local replaced = false
  for j = 1, count do
    local score = ARGV[at]
    local version = tonumber(ARGV[at + 1])
    local member = ARGV[at + 2]
    at = at + 3
    local t = tonumber(score)
    local wins = true
    -- n2 is the key's newest score: a newer row has no row at its time to compare with (the
    -- stream's usual row: one Lua call fewer per row, ~7 of ~42 per event)
    local same = {}
    if n2 ~= nil and t <= n2 then same = redis.call('ZRANGEBYSCORE', key, score, score) end
    for _, old in ipairs(same) do
      local old_version = tonumber(string.match(old, ',(%-?%d+)%]$'))
      if old_version == nil or old_version > version then wins = false end
    end
    if wins then
      if #same > 0 then
        redis.call('ZREMRANGEBYSCORE', key, score, score)
        replaced = true
      else
        new_scores[#new_scores + 1] = t
        new_members[#new_members + 1] = member
        if n2 == nil or t > n2 then n2 = t end
      end
      redis.call('ZADD', key, score, member)
      stored = stored + 1
      changed = true
    end
  end
  local new = #new_scores
  if n1 == nil and new <= min_rows then new = 0 end  -- a new key of at most min_rows rows
  local ranked = nil
  if new > 0 then
    start = floor_div(n2, trim_us) * trim_us - horizon
    -- rows at or after t_min are among the MIN_ROWS newest: kept. When the newest MIN_ROWS +
    -- new rows are all within the horizon (the stream's usual call), no older row is among
    -- them (t_min = start) and none of them can go: a ZCOUNT instead of their members
    t_min = start
    if redis.call('ZCOUNT', key, fmt(start), '+inf') < min_rows + new then
      ranked = redis.call('ZREVRANGE', key, min_rows - 1, min_rows - 1 + new, 'WITHSCORES')
      if #ranked < 4 then new = 0 else t_min = tonumber(ranked[2]) end  -- <= min_rows rows
    end
  end
  if new > 0 then
    for i = 1, nwin do bounds[i] = ceil_div(start - ws[i], gs[i]) * gs[i] end
    drop = {}
    if ranked then
      for i = 3, #ranked, 2 do check(ranked[i], tonumber(ranked[i + 1]), tonumber(ranked[i - 1])) end
    end
    if n1 ~= nil and n2 > n1 then
      local start1 = floor_div(n1, trim_us) * trim_us - horizon
      band(start1, start - 1)
      for i = 1, nwin do
        local g = gs[i]
        band(ceil_div(start1 - ws[i], g) * g + 1, bounds[i])
      end
    end
    for j = 1, #new_scores do
      local t = new_scores[j]
      if t < start then
        local s = fmt(t)
        local prev = redis.call('ZREVRANGEBYSCORE', key, '(' .. s, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
        if #prev > 0 then check(prev[1], tonumber(prev[2]), t) end
        local succ = redis.call('ZRANGEBYSCORE', key, '(' .. s, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
        if #succ > 0 then check(new_members[j], t, tonumber(succ[2])) end
      end
    end
    for i = 1, #drop, 1000 do  -- unpack's stack limit: a band may hold an hour of rows
      redis.call('ZREM', key, unpack(drop, i, math.min(i + 999, #drop)))
    end
  end
  if changed then
    -- only this call's members: the key did not exist, so it has no expiry to compare with;
    -- a replaced row may have been the key's only one (the key was deleted and made anew)
    if n1 == nil or (replaced and redis.call('PTTL', key) == -1) then
      redis.call('PEXPIREAT', key, pxat)
    elseif floor_div(n2, granule_us) ~= floor_div(n1, granule_us) then
      -- a row's expiry is a function of its feature_time's hour (layout.py): the key's
      -- expiry already covers a newest row in the hour of the previous newest
      redis.call('PEXPIREAT', key, pxat, 'GT')
    end
  end
end
return stored
""".replace("GRANULE_US", str(EXPIRY_GRANULE_MS * 1000)).replace(
    "TRIM_US", str(HISTORY_GRANULE // HISTORY_GRANULE.resolution)
)


def _cluster_calls(encoded: pl.DataFrame) -> Iterable[ScriptCall]:
    """Script calls of about CHUNK_ROWS rows each, the rows of one key together (the history
    of a key is trimmed and its expiry moved once per call), for a Redis Cluster: a call never
    spans two hash slots, i.e. it holds the keys of one entity (layout.py's hash tag) or of
    entities that happen to share a slot. A single server gets ``_calls``."""
    horizon_us = HISTORY_HORIZON // HISTORY_HORIZON.resolution
    keys: list[str] = []
    args: list[str | int] = [horizon_us, HISTORY_MIN_ROWS]
    rows = 0
    grouped = (
        _with_retain(encoded)
        .group_by("key", maintain_order=True)
        .agg(pl.len().alias("count"), pl.col("pxat").max(), pl.col("retain").first())
    )
    slot_column = pl.Series("slot", [slot_of(key) for key in grouped["key"]], pl.Int32)
    grouped = grouped.with_columns(slot_column).sort("slot", maintain_order=True)
    slots = grouped["slot"].to_list()
    # the rows in the keys' order as flat columns: converting list columns to Python
    # (``iter_rows``) was 12% of the stream worker's samples (py-spy)
    position = grouped.select("key").with_row_index("__key_position")
    flat = encoded.join(position, on="key").sort("__key_position", maintain_order=True)
    scores, versions, values = (flat[c].to_list() for c in ("score", "version", "value"))
    previous_slot = None
    at = 0
    for i, (key, count, pxat, retain) in enumerate(
        zip(
            grouped["key"].to_list(),
            grouped["count"].to_list(),
            grouped["pxat"].to_list(),
            grouped["retain"].to_list(),
            strict=True,
        )
    ):
        if keys and slots[i] != previous_slot:
            yield keys, args
            keys, args, rows = [], [horizon_us, HISTORY_MIN_ROWS], 0
        previous_slot = slots[i]
        keys.append(key)
        args += [count, pxat, *retain.split(" ")]
        for j in range(at, at + count):
            args += [scores[j], versions[j], values[j]]
        at += count
        rows += count
        if rows >= CHUNK_ROWS:
            yield keys, args
            keys, args, rows = [], [horizon_us, HISTORY_MIN_ROWS], 0
    if keys:
        yield keys, args


def _calls(encoded: pl.DataFrame) -> pl.DataFrame:
    """``_cluster_calls`` on a single server (no slots), as ``keyed_calls``: whole keys per
    call until it holds CHUNK_ROWS rows (the last key may pass it), no Python per row."""
    per_key = (
        _with_retain(encoded)
        .lazy()
        .group_by("key", maintain_order=True)
        .agg(
            pl.len().alias("count"),
            pl.col("pxat").max(),
            pl.col("retain").first(),
            pl.concat_str([resp_bulk(pl.col(c)) for c in ("score", "version", "value")])
            .str.join("")
            .alias("rows"),
        )
    )
    count = pl.col("count")
    retain = pl.col("retain").str.split(" ")
    return keyed_calls(
        per_key,
        call=(count.cum_sum() - count) // CHUNK_ROWS,
        argc=2 + retain.list.len() + 3 * count,
        args=pl.concat_str(
            [
                resp_bulk(count),
                resp_bulk(pl.col("pxat")),
                retain.list.eval(resp_bulk(pl.element())).list.join(""),
                pl.col("rows"),
            ]
        ),
    ).collect(engine="in-memory")


def _with_retain(encoded: pl.DataFrame) -> pl.DataFrame:
    """``encoded`` with its ``retain`` column (frames encoded without one: no windows)."""
    if "retain" in encoded.columns:
        return encoded
    return encoded.with_columns(retain=pl.lit("0"))


def write_encoded(client: redis.Redis, encoded: pl.DataFrame) -> int:
    """Store ``encode_rows`` output through the compare-on-write script; returns rows stored
    (a row that lost the comparison to a stored row of the same feature_time is not counted).

    Round trips: one per CALLS_PER_PIPELINE script calls on a single server. On a Redis Cluster
    a call holds one slot's keys (a few rows: one entity's), so a pipeline takes
    CLUSTER_CALLS_PER_PIPELINE calls and costs one round trip per node, the nodes in parallel.

    A key holding something other than a layout-5 sorted set makes Redis refuse the script
    (``redis.ResponseError``, WRONGTYPE).
    """
    if encoded.height == 0:
        return 0
    script = PipelinedScript(client, WRITE_ROWS_LUA)
    if script.cluster:
        return sum(script.run(_cluster_calls(encoded), CLUSTER_CALLS_PER_PIPELINE))
    calls = _calls(encoded)
    horizon_us = HISTORY_HORIZON // HISTORY_HORIZON.resolution
    fixed = (horizon_us, HISTORY_MIN_ROWS)
    return sum(script.run_packed(lambda sha: packed_evalsha(sha, calls, fixed), CALLS_PER_PIPELINE))


def write_rows(
    client: redis.Redis,
    group: FeatureGroup,
    rows: pl.DataFrame,
    *,
    version: pl.Expr | int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Write feature rows of ``group`` (entity_key, feature_time, features) with writer_version
    ``version``; returns the rows stored. Checks for null keys before anything is written."""
    if rows.height == 0:
        return 0
    nulls = rows.select(pl.col(ENTITY_KEY, FEATURE_TIME).null_count()).row(0)
    if any(nulls):
        raise ValueError(
            f"{group.versioned_name}: {nulls[0]} rows without {ENTITY_KEY}, "
            f"{nulls[1]} without {FEATURE_TIME}"
        )
    stored = 0
    for batch in rows.iter_slices(batch_size):
        stored += write_encoded(client, encode_rows(group, batch, version))
    return stored


def write_snapshot(
    client: redis.Redis,
    group: FeatureGroup,
    latest_rows: pl.DataFrame,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> int:
    """Write rows from the batch path (writer_version 0: each entity's latest row, or its
    ``online_history``); returns the rows stored. A row the stream already holds at the same
    feature_time stays the stream's, and a newer stream row stays the newest: the batch
    snapshot adds history, never hides it.
    """
    if latest_rows.height == 0:
        return 0
    rows = latest_rows.select(ENTITY_KEY, FEATURE_TIME, *stored_group(group).feature_names)
    return write_rows(client, group, rows, version=0, batch_size=batch_size)
