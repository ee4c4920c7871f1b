"""Each entity's events, kept in Redis for the stream worker: one hash per (topic, entity).

Key: ``fps:1:{<topic>:<entity kind>:<entity key>}`` (a hash tag: one slot per entity). Fields:
``<event id>`` -> the event's stored columns as a JSON array (``plan.EntityStream.columns``),
``#n`` -> how many events were ever added (the entity's version).

``add_and_read`` adds a batch of events and reads back all of the entity's events in ONE atomic
script call: ``HSETNX`` makes a redelivered event (a replay after a crash, a duplicate
message) a no-op, so applying a batch twice leaves the store as applying it once, and the
version it returns counts exactly the events in the snapshot it returns. Two workers touching
the same entity (a merchant paid from users in different partitions) each get a consistent
snapshot; the rows computed from the larger one carry the higher version and win in the online
store (``online/writer.py``), whatever order the writes land in.

Why Redis and not the engine's own state: rows are computed in polars for a whole checkpoint at
once (per event in Python, ``compute.py`` costs ~1 ms per call), so the state must be readable
for a batch of entities at flush time; Quix state is per message. An entity's events expire
``retention`` (its groups' longest TTL or window) after its newest event.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

STORE_LAYOUT_VERSION = 1
VERSION_FIELD = "#n"
CHUNK_ENTITIES = 200

# KEYS: entity hashes. ARGV per key: count, pxat, then count x (id, payload).
# Returns per key: {version, payload, payload, ...} (every stored event of the entity).
ADD_AND_READ_LUA = """
local out = {}
local at = 1
for i, key in ipairs(KEYS) do
  local count = tonumber(ARGV[at])
  local pxat = ARGV[at + 1]
  at = at + 2
  local added = 0
  for j = 1, count do
    added = added + redis.call('HSETNX', key, ARGV[at], ARGV[at + 1])
    at = at + 2
  end
  local version = redis.call('HINCRBY', key, '#n', added)
  if redis.call('PTTL', key) == -1 then
    redis.call('PEXPIREAT', key, pxat)
  else
    redis.call('PEXPIREAT', key, pxat, 'GT')
  end
  local fields = redis.call('HGETALL', key)
  local entry = {version}
  for j = 1, #fields, 2 do
    if fields[j] ~= '#n' then entry[#entry + 1] = fields[j + 1] end
  end
  out[i] = entry
end
return out
"""


def store_key(prefix: str, stream_name: str, entity_key: str) -> str:
    return f"{prefix}fps:{STORE_LAYOUT_VERSION}:{{{stream_name}:{entity_key}}}"


@dataclass
class EntityBatch:
    """New events of one entity: ``(event id, payload)`` pairs, and the store's expiry."""

    key: str
    events: list[tuple[str, str]]
    pxat_ms: int


@dataclass
class EntitySnapshot:
    version: int
    payloads: list[bytes]


def encode_payload(values: Sequence[object]) -> str:
    """An event's stored columns as JSON (floats round-trip exactly through ``repr``)."""
    return json.dumps(values, ensure_ascii=False, separators=(",", ":"))


def add_and_read(client: redis.Redis, batches: Iterable[EntityBatch]) -> list[EntitySnapshot]:
    """Add each entity's new events and return its whole stored history, in input order."""
    script = client.register_script(ADD_AND_READ_LUA)
    pipe = client.pipeline(transaction=False)
    keys: list[str] = []
    args: list[str | int] = []
    for batch in batches:
        keys.append(batch.key)
        args += [len(batch.events), batch.pxat_ms]
        for event_id, payload in batch.events:
            args += [event_id, payload]
        if len(keys) == CHUNK_ENTITIES:
            script(keys=keys, args=args, client=pipe)
            keys, args = [], []
    if keys:
        script(keys=keys, args=args, client=pipe)
    snapshots = []
    for reply in pipe.execute():
        for entry in reply:
            snapshots.append(EntitySnapshot(version=int(entry[0]), payloads=entry[1:]))
    return snapshots
