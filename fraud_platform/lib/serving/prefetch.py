"""A request's feature lookup sent to Redis from the event loop and its reply awaited there: no
thread hand-off on the scoring path.

``ScriptPipe`` is one connection to Redis of its own (not from the client's pool), driven by the
worker's event loop (an ``asyncio.Protocol``): ``send`` writes a script call and returns a
future that the reply resolves; replies come in request order (one connection), so the n-th
reply resolves the n-th future. hiredis parses them, as it does for redis-py.

Why not the handler thread (the design until 2026-12-07: sent from the loop, read on the
handler thread): at 300 req/s on the 2-core machine, a /score request then cost 1.58 ms of
server CPU and its threads waited 0.63 ms per request for a core (three wake-ups: the handler
thread, the Redis reply, the loop again), against 1.36 ms and 0.30 ms answered on the loop
(``benchmarks/serving_load.py --quick --baseline-src``, same run): p50 over ``/ping`` 1.39x ->
1.26x. Why not ``redis.asyncio``: its per-command path (connection pool, command packing,
response callbacks) is the redis-py cost ``ScriptPipe`` exists to skip.

A reply not there within ``timeout_s`` of its send breaks the pipe: that request fails with a
``redis.TimeoutError``, every request behind it on the pipe with ``PipeBroken`` at once (they would
wait for the same Redis), and the transport is closed; ``FeatureLookup`` opens another pipe
after the next lookup that succeeds through the client. So does a lost connection. Plain TCP
or Unix-socket connections only (no TLS, no Redis Cluster: a cluster is asked per slot).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import hiredis
import redis
from redis._parsers.base import BaseParser
from redis.connection import Connection, UnixDomainSocketConnection

from fraud_platform.lib.features.online.reader import READ_ROWS_LUA, OnlineFeatureReader

log = logging.getLogger(__name__)

PIPE_CONNECTIONS = (Connection, UnixDomainSocketConnection)


class PipeBroken(redis.ConnectionError):
    """The pipe broke (a reply timed out or the connection was lost) before this reply came."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A script call's reply and when it arrived (perf_counter)."""

    value: Any
    arrived: float


class ScriptPipe(asyncio.Protocol):
    """One Redis connection on the event loop: script calls written, replies resolve futures."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, encoding: str | None):
        self._loop = loop
        self._timeout_s = timeout_s
        kwargs: dict[str, Any] = {"protocolError": redis.InvalidResponse}
        kwargs["replyError"] = BaseParser.parse_error  # NOSCRIPT as NoScriptError, ...
        if encoding is not None:
            kwargs["encoding"] = encoding
        self._reader = hiredis.Reader(**kwargs)
        self._waiting: collections.deque[tuple[asyncio.Future[Reply], asyncio.TimerHandle]] = (
            collections.deque()
        )
        self._transport: asyncio.Transport | None = None
        self.broken = False
        self.local_address: Any = None

    @classmethod
    async def open(
        cls, client: Any, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> ScriptPipe | None:
        """A connected pipe with the reader's script loaded; None when ``client`` does not
        allow one (TLS, a cluster, another connection class). Raises what connecting raises.
        The connection is made by redis-py (authentication, database, protocol as the client's
        own), on a thread, then handed to the loop."""
        pool = getattr(client, "connection_pool", None)
        if pool is None or not hasattr(pool, "make_connection"):
            return None
        conn = pool.make_connection()
        if type(conn) not in PIPE_CONNECTIONS:
            conn.disconnect()
            return None
        sock = await loop.run_in_executor(None, _connected_socket, conn)
        decoder = conn.encoder
        pipe = cls(loop, timeout_s, decoder.encoding if decoder.decode_responses else None)
        try:
            if sock.family == socket.AF_UNIX:
                await loop.create_unix_connection(lambda: pipe, sock=sock)
            else:
                await loop.create_connection(lambda: pipe, sock=sock)
        except BaseException:
            sock.close()
            raise
        return pipe

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.local_address = transport.get_extra_info("sockname")

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        arrived = time.perf_counter()
        while True:
            try:
                value = reader.gets()
            except redis.InvalidResponse as exc:  # not RESP: nothing after it can be trusted
                self._break(exc)
                return
            if value is False:
                return
            if not self._waiting:
                self._break(redis.InvalidResponse("a reply nobody asked for"))
                return
            future, timer = self._waiting.popleft()
            timer.cancel()
            if future.done():  # cancelled: the request is gone
                continue
            if isinstance(value, redis.RedisError):
                future.set_exception(value)
            else:
                future.set_result(Reply(value, arrived))

    def connection_lost(self, exc: Exception | None) -> None:
        self._break(exc or redis.ConnectionError("Redis closed the connection"))

    # -- use -----------------------------------------------------------------------------

    def send(self, packed: bytes) -> asyncio.Future[Reply]:
        """Write one packed command (on the loop); the future its reply resolves. Raises
        ``PipeBroken`` when the pipe is broken."""
        if self.broken or self._transport is None:
            raise PipeBroken("the pipe is closed")
        future: asyncio.Future[Reply] = self._loop.create_future()
        timer = self._loop.call_later(self._timeout_s, self._timed_out)
        self._waiting.append((future, timer))
        self._transport.write(packed)
        return future

    def _timed_out(self) -> None:
        budget_ms = self._timeout_s * 1000
        self._break(redis.TimeoutError(f"no reply from Redis within {budget_ms:.0f} ms"))

    def _break(self, exc: BaseException) -> None:
        """The first waiting request fails with ``exc``, the others with ``PipeBroken``."""
        self.broken = True
        first = True
        while self._waiting:
            future, timer = self._waiting.popleft()
            timer.cancel()
            if not future.done():
                future.set_exception(exc if first else PipeBroken(f"pipe broken: {exc!r}"))
            first = False
        if self._transport is not None:
            self._transport.close()

    def close(self) -> None:
        """Close the connection; requests still waiting fail with ``PipeBroken``."""
        if not self.broken:
            self._break(PipeBroken("the pipe was closed"))


def _connected_socket(conn: Any) -> socket.socket:
    """Connect ``conn`` (redis-py's handshake), load the script, take its socket over."""
    try:
        conn.connect()
        conn.send_command("SCRIPT", "LOAD", READ_ROWS_LUA)
        conn.read_response()
    except BaseException:
        conn.disconnect()
        raise
    sock, conn._sock = conn._sock, None  # the pipe's now: disconnect() must not close it
    conn._parser.on_disconnect()
    return sock


@dataclass(frozen=True, slots=True)
class Sent:
    """A lookup written to a pipe: what reading its reply needs."""

    pipe: ScriptPipe
    reply: asyncio.Future[Reply]
    reader: OnlineFeatureReader
    keys: list[str | None]
    now: datetime
    started: float  # perf_counter when it was written


def send_lookup(
    pipe: ScriptPipe, reader: OnlineFeatureReader, entities: Any, now: datetime, started: float
) -> Sent | None:
    """Write ``reader``'s script call for ``entities`` to ``pipe``; None when there is nothing
    to ask (no join key) or the reader's client is a cluster's. Raises what writing raises."""
    if reader.cluster:
        return None
    keys, packed = reader.packed_script_call(entities, now)
    if packed is None:
        return None
    return Sent(pipe, pipe.send(packed), reader, keys, now, started)
