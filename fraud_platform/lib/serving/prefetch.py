"""A request's feature lookup sent to Redis from the event loop, its reply read on the handler
thread: the round trip overlaps the hand-off between the two.

Profiled at 150 req/s on one worker (2026-12-06), a /score request's handler thread spent
~150 us of its ~530 us in the lookup, ~113 us of it waiting for the ``EVALSHA`` reply, after
waiting to be woken for the request at all. Sent from the event loop just before the hand-off,
Redis works while the handler thread wakes up; the reply is usually there when it reads.

``ScriptPipe`` is one connection to Redis of its own (not from the client's pool): the event
loop only writes to it (``send``), one handler thread only reads from it (``reply``), both in
request order, so the n-th reply is the n-th request's. A reply nobody reads (the request was
cancelled before the handler thread took it up, or scored with another model) is read and
dropped by the next ``reply``. A timeout or a failed write leaves the replies out of step: the
pipe is then ``broken``, closed by the handler thread and not used again (``FeatureLookup``
opens another one after the next lookup that succeeds through the client). Plain TCP or Unix-socket connections only: a TLS
socket is not read and written by two threads at once, a Redis Cluster is asked per slot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from redis.connection import Connection, UnixDomainSocketConnection

from fraud_platform.lib.features.online.reader import READ_ROWS_LUA, OnlineFeatureReader

log = logging.getLogger(__name__)

PIPE_CONNECTIONS = (Connection, UnixDomainSocketConnection)


class ScriptPipe:
    """One Redis connection: script calls written by one thread, replies read by another."""

    __slots__ = ("_conn", "_sock", "sent", "_read", "broken")

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sock = conn._sock  # written directly: redis-py's send disconnects on failure
        self.sent = 0  # requests written (event loop)
        self._read = 0  # replies read (handler thread)
        self.broken = False

    @classmethod
    def open(cls, client: Any) -> ScriptPipe | None:
        """A connected pipe with the reader's script loaded; None when ``client`` does not
        allow one (TLS, a cluster, another connection class). Raises what connecting raises."""
        pool = getattr(client, "connection_pool", None)
        if pool is None or not hasattr(pool, "make_connection"):
            return None
        conn = pool.make_connection()
        if type(conn) not in PIPE_CONNECTIONS:
            conn.disconnect()
            return None
        try:
            conn.connect()
            conn.send_command("SCRIPT", "LOAD", READ_ROWS_LUA)
            conn.read_response()
        except BaseException:
            conn.disconnect()
            raise
        return cls(conn)

    def send(self, *args: Any) -> int:
        """Write one command (event loop); its number, for ``reply``."""
        packed = self._conn.pack_command(*args)
        try:
            self._sock.sendall(packed if isinstance(packed, bytes) else b"".join(packed))
        except BaseException:  # a part may have been written: out of step from here
            self.broken = True
            raise
        self.sent += 1
        return self.sent

    def reply(self, number: int) -> Any:
        """The reply to command ``number`` (handler thread), after dropping the unread ones
        before it. Raises the reply's ``ResponseError`` (the pipe stays in step) or what the
        connection raises (then ``broken``)."""
        try:
            while self._read < number - 1:
                self._read += 1
                try:
                    self._conn.read_response()
                except redis.ResponseError:
                    pass
            self._read += 1
            return self._conn.read_response()
        except redis.ResponseError:
            raise
        except BaseException:
            self.broken = True
            raise

    def close(self) -> None:
        self.broken = True
        self._conn.disconnect()


@dataclass(frozen=True, slots=True)
class Sent:
    """A lookup written to a pipe: what reading its reply needs."""

    pipe: ScriptPipe
    number: int
    reader: OnlineFeatureReader
    keys: list[str | None]
    now: datetime
    started: float  # perf_counter when it was written


def send_lookup(
    pipe: ScriptPipe, reader: OnlineFeatureReader, entities: Any, now: datetime, started: float
) -> Sent | None:
    """Write ``reader``'s script call for ``entities`` to ``pipe``; None when there is nothing
    to ask (no join key) or the pipe is a cluster's. Raises what writing raises."""
    if reader.cluster:
        return None
    keys, wanted, args = reader.script_call(entities, now)
    if not wanted:
        return None
    number = pipe.send("EVALSHA", reader.script_sha, len(wanted), *wanted, *args)
    return Sent(pipe, number, reader, keys, now, started)
