"""One socket write per answer instead of two.

uvicorn writes a response's status line and headers when the application sends
``http.response.start``, and its body when it sends ``http.response.body``: two writes, two TCP
segments, and on the client two wake-ups for one answer. Profiled on a /score worker at 150
req/s (py-spy, 2026-12-06), the two writes of ``ScoreRoute``'s answer were ~60 us of the event
loop's ~180 us per request; a write is a system call that also runs the loopback's delivery to
the client.

``OneWriteTransport`` stands for the connection's transport in one request cycle of uvicorn's
httptools protocol (``early_refusal.EarlyRefusalProtocol`` installs it): the head of a response
with a ``Content-Length`` and a body is held until the body's first write and goes out with it.
Everything else passes through as it comes: a ``100 Continue`` (written before the response
starts), a chunked or empty answer, the answer to a HEAD request, every later body write. A
head still held when the cycle closes the connection is written first.
"""

from __future__ import annotations

from typing import Any


class OneWriteTransport:
    """The transport of one uvicorn ``RequestResponseCycle`` (``cycle``); see the module."""

    __slots__ = ("_transport", "_cycle", "_head", "_started")

    def __init__(self, transport: Any, cycle: Any) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._started = False  # the response's head has been written (or is held)

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
            return
        cycle = self._cycle
        if not self._started and cycle.response_started:
            self._started = True  # uvicorn writes the head once, as the response starts
            if (
                cycle.chunked_encoding is False
                and cycle.expected_content_length > 0
                and cycle.scope["method"] != "HEAD"
            ):
                self._head = data
                return
        self._transport.write(data)

    def close(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)
