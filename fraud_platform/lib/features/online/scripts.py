"""Runs one Lua script over many calls, pipelined, on a single Redis or a Redis Cluster.

On a single server any keys may share a call. On a cluster every key of a call must hash to
one slot (Redis refuses CROSSSLOT scripts), so callers group keys by ``slot_of``; redis-py's
cluster pipeline then sends each node its calls (non-transactional, one connection per node):
it writes to every node before reading any, so a pipeline costs one round trip per node, all
three in flight at once. redis-py refuses ``pipe.evalsha`` in a cluster pipeline; the raw
``EVALSHA`` command goes through, after ``SCRIPT LOAD`` on every primary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl
import redis
from redis.crc import key_slot

from fraud_platform.lib.features.online.client import is_cluster

ScriptCall = tuple[Sequence[str], Sequence[Any]]  # (keys, args)
# (client id, script sha) loaded by this process: callers make a PipelinedScript per batch. A
# reused id or a server that lost its scripts only costs a NOSCRIPT reply and a reload.
_LOADED: set[tuple[int, str]] = set()


def resp_bulk(expr: pl.Expr) -> pl.Expr:
    """A RESP bulk string of each value: ``$<bytes>\\r\\n<text>\\r\\n`` (``run_packed``)."""
    text = expr.cast(pl.String)
    return pl.concat_str(
        [pl.lit("$"), text.str.len_bytes().cast(pl.String), pl.lit("\r\n"), text, pl.lit("\r\n")]
    )


def resp_bulk_text(value: str | int) -> str:
    text = str(value)
    return f"${len(text.encode())}\r\n{text}\r\n"


def packed_command(*args: str | int) -> bytes:
    """One Redis command in RESP (``redis.Connection.pack_command`` without a connection): the
    lookup the scoring path writes to its own pipe."""
    return (f"*{len(args)}\r\n" + "".join(map(resp_bulk_text, args))).encode()


def keyed_calls(per_key: pl.LazyFrame, call: pl.Expr, argc: pl.Expr, args: pl.Expr) -> pl.LazyFrame:
    """The script calls of ``per_key`` (one row per key, its ``key`` column), the keys in
    order, grouped by ``call`` (each key's call number): per call ``keys`` (how many),
    ``key_args`` (their RESP), ``argc`` and ``args`` (the sum and the RESP of each key's
    ``argc``/``args``), for ``packed_evalsha``."""
    return (
        per_key.with_columns(call.alias("__call"))
        .group_by("__call", maintain_order=True)
        .agg(
            pl.len().alias("keys"),
            resp_bulk(pl.col("key")).str.join("").alias("key_args"),
            argc.sum().alias("argc"),
            args.str.join("").alias("args"),
        )
        .select("keys", "key_args", "argc", "args")
    )


def packed_evalsha(
    sha: str, calls: pl.DataFrame, fixed_args: Sequence[str | int] = ()
) -> list[bytes]:
    """``keyed_calls`` as packed ``EVALSHA`` commands (``run_packed``), ``fixed_args`` before
    each call's own arguments."""
    fixed = "".join(resp_bulk_text(arg) for arg in fixed_args)
    packed = []
    for keys, key_args, argc, args in calls.select("keys", "key_args", "argc", "args").iter_rows():
        arity = 3 + keys + len(fixed_args) + argc  # EVALSHA sha numkeys, keys, args
        head = f"*{arity}\r\n$7\r\nEVALSHA\r\n" + resp_bulk_text(sha) + resp_bulk_text(keys)
        packed.append((head + key_args + fixed + args).encode())
    return packed


def slot_of(key: str) -> int:
    """The cluster hash slot of ``key`` (its ``{hash tag}`` if it has one)."""
    return key_slot(key.encode())


class PipelinedScript:
    """One Lua script; ``run`` executes many calls of it, ``calls_per_pipeline`` per round."""

    def __init__(self, client: redis.Redis, source: str) -> None:
        self._client = client
        self._source = source
        self.cluster = is_cluster(client)
        self._script = client.register_script(source)

    def run(self, calls: Iterable[ScriptCall], calls_per_pipeline: int) -> list[Any]:
        """Each call's result, in call order."""
        results: list[Any] = []
        batch: list[ScriptCall] = []
        for call in calls:
            batch.append(call)
            if len(batch) == calls_per_pipeline:
                results += self._execute(batch)
                batch = []
        if batch:
            results += self._execute(batch)
        return results

    def _execute(self, batch: Sequence[ScriptCall]) -> list[Any]:
        # raw EVALSHA after one SCRIPT LOAD: a pipeline of registered scripts asks SCRIPT
        # EXISTS first, a round trip per pipeline (and redis-py refuses ``pipe.evalsha`` in a
        # cluster pipeline)
        loaded = (id(self._client), self._script.sha)
        if loaded not in _LOADED:
            self._client.script_load(self._source)  # on every primary of a cluster
            _LOADED.add(loaded)
        try:
            return self._pipeline(batch)
        except redis.exceptions.NoScriptError:
            # the server restarted, failed over or flushed its scripts since SCRIPT LOAD: load
            # again, run once more (the platform's scripts are idempotent: compare-on-write,
            # HSETNX, reads)
            self._client.script_load(self._source)
            return self._pipeline(batch)

    def run_packed(self, calls: Callable[[str], list[bytes]], calls_per_round: int) -> list[Any]:
        """Each call's result, in call order: ``calls(sha)`` gives the calls as packed EVALSHA
        commands (RESP), sent ``calls_per_round`` per round trip. A single server only."""
        if self.cluster:
            raise ValueError("packed calls go to a single server")
        packed = calls(self._script.sha)
        results: list[Any] = []
        for start in range(0, len(packed), calls_per_round):
            chunk = packed[start : start + calls_per_round]
            try:
                results += self._send_packed(chunk)
            except redis.exceptions.NoScriptError:
                self._client.script_load(self._source)  # idempotent scripts: run once more
                results += self._send_packed(chunk)
        return results

    def _send_packed(self, packed: list[bytes]) -> list[Any]:
        """A pipeline of already packed commands: redis-py's packing of their arguments was
        ~20% of the stream worker's samples (py-spy). Connection errors are retried by the
        connection's retry policy (the whole round, as a redis-py pipeline does); an error reply
        is raised once every reply is read (the connection stays in step)."""
        pool = self._client.connection_pool
        connection = pool.get_connection()

        def round_trip() -> list[Any]:
            connection.send_packed_command(packed)
            replies: list[Any] = []
            error: redis.exceptions.ResponseError | None = None
            for _ in packed:
                try:
                    replies.append(connection.read_response())
                except redis.exceptions.ResponseError as exc:
                    error = error or exc
                    replies.append(None)
            if error is not None:
                raise error
            return replies

        try:
            return connection.retry.call_with_retry(round_trip, lambda _: connection.disconnect())
        finally:
            pool.release(connection)

    def _pipeline(self, batch: Sequence[ScriptCall]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        sha = self._script.sha
        for keys, args in batch:
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
        return pipe.execute()


def key_chunks(keys: Sequence[str], size: int, by_slot: bool) -> list[list[int]]:
    """Positions of ``keys`` in chunks of at most ``size`` for one script call each:
    consecutive positions on a single server; on a cluster (``by_slot``) each chunk within one
    hash slot."""
    if not by_slot:
        return [
            list(range(start, min(start + size, len(keys)))) for start in range(0, len(keys), size)
        ]
    by_slot_positions: dict[int, list[int]] = {}
    for position, key in enumerate(keys):
        by_slot_positions.setdefault(slot_of(key), []).append(position)
    return [
        positions[start : start + size]
        for positions in by_slot_positions.values()
        for start in range(0, len(positions), size)
    ]
