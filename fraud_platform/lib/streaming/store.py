"""Each entity's events, kept in Redis for the stream worker: one hash per (topic, entity) of
each ``plan.EntityStream`` (views whose entity extends the stream's, ``user_device`` of
``user``, read the stream's store).

Key: ``fps:2:{<topic>:<entity kind>:<entity key>}`` (a hash tag: one slot per entity). Fields:
``<event id>`` -> the event's stored columns as a JSON array (``plan.EntityStream.columns``),
``#n`` -> how many events were ever added (the entity's version).

``add_events`` adds a batch of events in ONE atomic script call per chunk of entities:
``HSETNX`` makes a redelivered event (a replay after a crash, a duplicate message) a no-op, so
applying a batch twice leaves the store as applying it once; the version it returns counts the
events stored. The worker keeps the stores it touched in memory (``processor``) and reads an
entity back (``read_entities``, version and events atomically) only when its version moved
by more than its own additions: after a restart, or when another worker added events. Two workers touching
the same entity (a merchant paid from users in different partitions) each get a consistent
snapshot; the rows computed from the larger one carry the higher version and win in the online
store (``online/writer.py``), whatever order the writes land in.

Why Redis and not the engine's own state: rows are computed in polars for a whole checkpoint at
once (per event in Python, ``compute.py`` costs ~1 ms per call), so the state must be readable
for a batch of entities at flush time; Quix state is per message. An entity's events expire
``retention`` (its groups' longest TTL or window) after its newest event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from fraud_platform.lib.features.online.scripts import PipelinedScript, key_chunks

STORE_LAYOUT_VERSION = 2  # 2: one store per stream of views (plan.py), not per view
VERSION_FIELD = "#n"
CHUNK_ENTITIES = 200

# KEYS: entity hashes. ARGV per key: count, pxat, then count x (id, payload).
# Returns per key: {version, flags} where flags has a "1" per event added, "0" per event the
# store already held. An expiry is never set less than an hour ahead of the server's clock: a
# call adding only an entity's older events (the bootstrap seeds bronze in offset order, a
# chunk at a time: a counterparty's first weeks of events came before its newer ones) would
# otherwise delete the store it had just added to, and with it the events the entity's lifetime
# totals count (the real-time demo served counts of 7 where the batch path counted 11).
ADD_LUA = """
local out = {}
local at = 1
local clock = redis.call('TIME')
local soonest = clock[1] * 1000 + math.floor(clock[2] / 1000) + 3600000
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  local pxat = string.format('%.0f', math.max(tonumber(ARGV[at + 1]), soonest))
  at = at + 2
  local added = 0
  local flags = {}
  for j = 1, count do
    local flag = redis.call('HSETNX', key, ARGV[at], ARGV[at + 1])
    added = added + flag
    flags[j] = tostring(flag)
    at = at + 2
  end
  local version = redis.call('HINCRBY', key, '#n', added)
  if version == added then  -- a new key (or an expired one): no expiry to compare with
    redis.call('PEXPIREAT', key, pxat)
  else
    redis.call('PEXPIREAT', key, pxat, 'GT')
  end
  out[i] = {version, table.concat(flags)}
end
return out
"""

# KEYS: entity hashes. Returns per key: {version, payload, payload, ...}, read atomically.
READ_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HGETALL', key)
  local entry = {0}
  for j = 1, #fields, 2 do
    if fields[j] == '#n' then entry[1] = tonumber(fields[j + 1])
    else entry[#entry + 1] = fields[j + 1] end
  end
  out[i] = entry
end
return out
"""


def store_key(prefix: str, stream_name: str, entity_key: str) -> str:
    return f"{prefix}fps:{STORE_LAYOUT_VERSION}:{{{stream_name}:{entity_key}}}"


@dataclass
class EntityBatch:
    """New events of one entity: ``(event id, payload, ...)`` tuples (what follows the payload
    is the caller's), and the store's expiry."""

    key: str
    events: Sequence[tuple[Any, ...]]
    pxat_ms: int


@dataclass
class EntitySnapshot:
    version: int
    payloads: list[bytes]


def add_events(client: redis.Redis, batches: Sequence[EntityBatch]) -> list[tuple[int, str]]:
    """Add each entity's new events; per entity (in input order) its version after the add and
    a flag per event ("1" added, "0" already stored). One pipeline (on a Redis Cluster the
    calls are per hash slot, one round trip per node)."""
    script = PipelinedScript(client, ADD_LUA)
    chunks = key_chunks([batch.key for batch in batches], CHUNK_ENTITIES, script.cluster)
    calls = []
    for positions in chunks:
        args: list[Any] = []
        for position in positions:
            batch = batches[position]
            args += [len(batch.events), batch.pxat_ms]
            for event in batch.events:
                args.append(event[0])
                args.append(event[1])
        calls.append(([batches[p].key for p in positions], args))
    out: list[tuple[int, str]] = [(0, "")] * len(batches)
    for positions, reply in zip(chunks, script.run(calls, max(len(calls), 1)), strict=True):
        for position, (version, flags) in zip(positions, reply, strict=True):
            out[position] = (int(version), flags.decode() if isinstance(flags, bytes) else flags)
    return out


def read_entities(client: redis.Redis, keys: Sequence[str]) -> list[EntitySnapshot]:
    """Each entity's version and stored events, read atomically per entity."""
    script = PipelinedScript(client, READ_LUA)
    chunks = key_chunks(keys, CHUNK_ENTITIES, script.cluster)
    calls = [([keys[p] for p in positions], []) for positions in chunks]
    out: list[EntitySnapshot | None] = [None] * len(keys)
    for positions, reply in zip(chunks, script.run(calls, max(len(calls), 1)), strict=True):
        for position, entry in zip(positions, reply, strict=True):
            out[position] = EntitySnapshot(version=int(entry[0]), payloads=entry[1:])
    return [snapshot for snapshot in out if snapshot is not None]
