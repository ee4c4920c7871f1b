"""Past capacity, a request the shedder would refuse at once is refused by the HTTP protocol,
before uvicorn starts any ASGI work for it.

``LoadShedder`` (``models_bento.shedding``) sits in front of the whole ASGI application, but a
refusal there still pays uvicorn's per-request path: a ``RequestResponseCycle``, an asyncio task
running the application, the proxy-headers middleware, Starlette's entry, two ``send`` calls and
two socket writes (the headers, then the body). At twice capacity half the requests are
refused, and that CPU is taken from the ones being scored.

``EarlyRefusalProtocol`` is uvicorn's httptools protocol with one addition: when a request's
headers are parsed and the shedder in front of this worker's application would refuse it at
once (``LoadShedder.refuse_now``: over the bound, and the line full or too slow), it writes the
very bytes uvicorn would have written for the shedder's 503, in one write, counts the refusal
as the shedder does (``fraud_scorer_shed_requests_total{reason="overload"}``), and drops the
request's body as uvicorn drops the body of an answered request. Anything else (a request the
shedder would admit or let wait in line, another path or method, a query string, HTTP/1.0 or
``Connection: close``, a pipelined request behind one in progress) goes
the usual way, where the shedder decides again.

It also gives each request cycle a ``one_write.OneWriteTransport``: an answer's head and body go
out in one socket write.

``install()`` makes it uvicorn's ``http="auto"`` protocol in this process (BentoML's worker
builds its ``uvicorn.Config`` with the default, after importing the service module). Without
httptools, or with a uvicorn whose protocol lacks what this relies on, nothing changes (logged).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from models_bento.one_write import OneWriteTransport

if TYPE_CHECKING:
    from models_bento.shedding import LoadShedder

log = logging.getLogger("bentoml.fraud_scorer")

PROTOCOL_PATH = "models_bento.early_refusal:EarlyRefusalProtocol"
STATUS_LINE_503 = b"HTTP/1.1 503 Service Unavailable\r\n"

# The shedder in front of this process's application (``FrontDoor`` sets it when it installs
# the shedder), None until then: every request goes the usual way.
_shedder: LoadShedder | None = None


def front_shedder() -> LoadShedder | None:
    return _shedder


def set_front_shedder(shedder: LoadShedder | None) -> None:
    global _shedder
    _shedder = shedder


def header_lines(headers: Any) -> bytes:
    """Header lines as uvicorn writes them: lower-cased names, ``name: value\\r\\n``."""
    return b"".join(name.lower() + b": " + value + b"\r\n" for name, value in headers)


def install() -> bool:
    """Make ``EarlyRefusalProtocol`` uvicorn's ``auto`` HTTP protocol; False when it cannot be
    (no httptools, or a uvicorn without the hooks it relies on)."""
    try:
        import uvicorn.config

        protocol = _protocol_class()
    except Exception as exc:  # noqa: BLE001 - an optimisation: without it refusals cost more
        log.warning("503s past capacity go through uvicorn's request path: %s", exc)
        return False
    if protocol is None:
        return False
    uvicorn.config.HTTP_PROTOCOLS["auto"] = PROTOCOL_PATH
    return True


_class: Any = None


def _protocol_class() -> Any:
    """``EarlyRefusalProtocol``, defined on first use (importing uvicorn's protocol needs
    httptools); None without httptools."""
    global _class
    if _class is not None:
        return _class
    try:
        import httptools  # noqa: F401
    except ImportError:
        log.warning("httptools is not installed: 503s past capacity go through uvicorn's path")
        return None
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.protocols.utils import get_client_addr

    for name in ("on_headers_complete", "on_body", "on_message_complete", "on_response_complete"):
        if not callable(getattr(HttpToolsProtocol, name, None)):
            raise RuntimeError(f"uvicorn's HttpToolsProtocol has no {name}")

    class _EarlyRefusalProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """uvicorn's httptools protocol; see the module docstring."""

        _refused = False  # the request being parsed was answered: its body is dropped
        _answer_for: tuple[Any, Any] | None = None  # (default headers, shedder) it was built for
        _answer = b""
        _announced = False

        def connection_made(self, transport: Any) -> None:
            if not _EarlyRefusalProtocol._announced:
                _EarlyRefusalProtocol._announced = True
                log.info(
                    "HTTP protocol: %s (503s at once before any ASGI work, one write per answer)",
                    PROTOCOL_PATH,
                )
            super().connection_made(transport)

        def on_message_begin(self) -> None:
            self._refused = False
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            shedder = _shedder
            if shedder is not None and self._refuse(shedder):
                return
            before = self.cycle
            super().on_headers_complete()
            cycle = self.cycle
            if cycle is not before and cycle is not None:  # one write per answer
                cycle.transport = OneWriteTransport(self.transport, cycle)

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def _refuse(self, shedder: LoadShedder) -> bool:
            """Answer 503 here when the shedder would refuse this request at once."""
            if (
                self.url not in shedder.raw_paths  # also: a query string, %-escapes
                or self.root_path
                or self.pipeline
                or self.flow.write_paused
                or (self.cycle is not None and not self.cycle.response_complete)
            ):
                return False
            parser = self.parser
            if (
                parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1"
                or not parser.should_keep_alive()
                or parser.should_upgrade()
            ):
                return False
            reason = shedder.refuse_now()
            if reason is None:
                return False
            self._refused = True
            shedder.count_refusal(reason)
            if self.access_log:  # uvicorn's line for the answer (BentoML's level hides it)
                self.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(self.scope),
                    "POST",
                    self.url.decode("ascii"),
                    "1.1",
                    503,
                )
            self.transport.write(self._refusal(shedder))
            self.on_response_complete()  # as after any answer: keep-alive timer, next request
            return True

        def _refusal(self, shedder: LoadShedder) -> bytes:
            """The bytes uvicorn writes for the shedder's 503 (its date header changes every
            second: rebuilt then)."""
            defaults = self.server_state.default_headers
            built = self._answer_for
            if built is None or built[0] is not defaults or built[1] is not shedder:
                start, body = shedder.refusal
                head = header_lines([*defaults, *start["headers"]])
                type(self)._answer = STATUS_LINE_503 + head + b"\r\n" + body
                type(self)._answer_for = (defaults, shedder)
            return self._answer

    _EarlyRefusalProtocol.__name__ = _EarlyRefusalProtocol.__qualname__ = "EarlyRefusalProtocol"
    _class = _EarlyRefusalProtocol
    return _class


def __getattr__(name: str) -> Any:
    """``EarlyRefusalProtocol``: what ``uvicorn.config`` imports by ``PROTOCOL_PATH``."""
    if name == "EarlyRefusalProtocol":
        protocol = _protocol_class()
        if protocol is None:
            from uvicorn.protocols.http.auto import AutoHTTPProtocol

            return AutoHTTPProtocol
        return protocol
    raise AttributeError(name)
