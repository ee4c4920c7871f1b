"""What the scoring service answers to requests it cannot take, and the middleware that answers.

``LoadShedder`` bounds the API requests each worker has taken on: past the bound a request waits
in a short line bounded in time, and gets 503 with a JSON ``ErrorResponse`` and ``Retry-After``
when that time is up (``fraud_scorer_shed_requests_total{reason="queue_timeout"}``) or at once
when the line cannot move in time (``reason="overload"``), instead of queueing for seconds.

``RequestGuard`` is a plain ASGI middleware in front of the API routes (all POST). Before
BentoML parses anything it rejects, with a JSON ``ErrorResponse``:

* 415 a body that is not ``application/json`` (multipart and form bodies made BentoML fail
  with a 500), or no content type at all on a route that takes a body;
* 413 a body over the contract's ``MAX_PAYLOAD_BYTES`` (the limit Kafka ingestion applies),
  checked on ``content-length`` and again while reading, so a chunked body cannot bypass it.

It also serves the published OpenAPI document at ``/docs.json`` (``models_bento.openapi``),
which BentoML would otherwise generate as OpenAPI 3.0 that 3.0 tools reject.

Field-level rejections stay BentoML's 400 (``ValidationErrorResponse``: pydantic's errors,
without input values).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from fraud_platform.lib.contracts.events import MAX_PAYLOAD_BYTES
from fraud_platform.lib.serving.metrics import metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
DOCS_PATH = "/docs.json"
RETRY_AFTER_S = 1
REJECTED_REQUEST = "rejected request (%s): %s"  # log line: path, field_errors()
HOLD_SMOOTHING = 0.1  # weight of the latest request in LoadShedder's smoothed hold time


class ErrorResponse(BaseModel):
    """A request refused before validation (wrong content type, too large) or a server error."""

    error: str = Field(description="What is wrong, in one sentence.")


class ValidationErrorDetail(BaseModel):
    type: str = Field(description="Pydantic error type, e.g. 'missing' or 'value_error'.")
    loc: list[str | int] = Field(
        description="Where: the field name, empty for whole-request (contract) checks."
    )
    msg: str = Field(description="What is wrong with it.")
    url: str | None = Field(None, description="Pydantic's documentation of the error type.")


class ValidationErrorResponse(BaseModel):
    """A request whose JSON does not match the request schema or breaks the contract."""

    error: str = Field(description="e.g. '1 validation error for TransactionRequest'.")
    detail: list[ValidationErrorDetail]


def validation_error_body(exc: ValidationError) -> bytes:
    """The 400 body of a request that fails validation: BentoML's own (``api_endpoint_wrapper``,
    encoded as its ``JSONResponse`` does), which ``ValidationErrorResponse`` declares."""
    body = {
        "error": f"{exc.error_count()} validation error for {exc.title}",
        "detail": exc.errors(include_context=False, include_input=False),
    }
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def field_errors(exc: ValidationError) -> str:
    """The field errors of a rejected request for the log: where and what, no input values."""
    return "; ".join(
        f"{'.'.join(str(part) for part in e['loc']) or '<request>'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_context=False)
    )


async def send_json(
    send: Send, status: int, payload: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON.encode()),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


async def _send_error(send: Send, status: int, message: str) -> None:
    await send_json(send, status, ErrorResponse(error=message).model_dump_json().encode())


class LoadShedder:
    """ASGI middleware: at most ``limit`` requests to ``paths`` in progress in this worker
    (parsed, on the handler thread or answering); the next ones wait in line (first come, first
    served) at most ``max_wait_s`` for a place, then get 503 with ``Retry-After``
    (``reason="queue_timeout"``). A request that would wait longer than that by the current
    rate of progress (the line's length times the recent time a place is held, over ``limit``)
    gets its 503 at once (``reason="overload"``), so does one past ``max_waiting``.
    ``max_wait_s=0``: no line, 503 at once past the bound.

    Why a short line on a tight bound rather than a count: the worker has one handler thread,
    so with 8 requests admitted per worker the 8th waited for 7 others; at 2x capacity
    (2026-12-05, shared machine, load 9-12) answered p99 was 357-414 ms and BentoML's own
    request histogram put p99 in the 250-500 ms bucket: the wait was inside the server, after
    admission. Bounding the wait bounds the answered latency; the line absorbs bursts that a
    count bound of 1-2 would refuse.

    BentoML's own bound (``traffic.max_concurrency``) counts but answers 429, which says the
    *client* sent too many: here the service is over capacity.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        paths: Collection[str],
        max_wait_s: float = 0.0,
        max_waiting: int = 256,
        retry_after_s: int = RETRY_AFTER_S,
    ) -> None:
        self.app = app
        self.limit = limit
        self.paths = frozenset(paths)
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting if max_wait_s > 0 else 0
        self.in_progress = 0
        self.waiting = 0
        self._line: deque[asyncio.Future[bool]] = deque()
        # smoothed seconds a place is held (admission to the last byte of the answer)
        self.hold_s = 0.0
        self._retry_after = (b"retry-after", str(retry_after_s).encode())
        self._refusal = (
            ErrorResponse(
                error=f"over capacity: {limit} requests already in progress in this worker; "
                f"retry after {retry_after_s} s"
            )
            .model_dump_json()
            .encode()
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.in_progress < self.limit:  # then nobody waits: _release hands places on first
            self.in_progress += 1
        else:
            refused = self._refusal_reason()
            if refused is None:
                refused = await self._wait_in_line()
            if refused is not None:
                metrics().shed_request(refused)
                await send_json(send, 503, self._refusal, (self._retry_after,))
                return
        admitted = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.hold_s += (time.perf_counter() - admitted - self.hold_s) * HOLD_SMOOTHING
            self._release()

    def _refusal_reason(self) -> str | None:
        """``"overload"`` when waiting in line would be pointless: no line, a full one, or one
        that will not have moved enough within ``max_wait_s``."""
        if self.waiting >= self.max_waiting:
            return "overload"
        if (self.waiting + 1) * self.hold_s > self.max_wait_s * self.limit:
            return "overload"
        return None

    async def _wait_in_line(self) -> str | None:
        """None once handed a place (by ``_release``), ``"queue_timeout"`` after
        ``max_wait_s``."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(self.max_wait_s, _give_up, waiter)
        self._line.append(waiter)
        self.waiting += 1
        try:
            placed = await waiter
        except asyncio.CancelledError:  # client gone: pass on a place handed meanwhile
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()
            raise
        finally:
            self.waiting -= 1
            timer.cancel()
        return None if placed else "queue_timeout"

    def _release(self) -> None:
        """Hand this place to the first one still waiting, else free it."""
        while self._line:
            waiter = self._line.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.in_progress -= 1


def _give_up(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class RequestGuard:
    """ASGI middleware: content type and size limits on the API routes, and ``/docs.json``."""

    def __init__(self, app: ASGIApp, service: Any, max_bytes: int = MAX_PAYLOAD_BYTES) -> None:
        self.app = app
        self.service = service
        self.max_bytes = max_bytes
        # route -> whether it requires a body (an input model with required fields)
        self.routes = {
            method.route: any(f.is_required() for f in method.input_spec.model_fields.values())
            for method in service.apis.values()
        }
        self._docs: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == DOCS_PATH and method in ("GET", "HEAD"):
            await send_json(send, 200, self._published_docs())
            return
        if method != "POST" or path not in self.routes:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower().decode()
        declared = headers.get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, 413, self._too_large(int(declared)))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _send_error(send, 413, self._too_large(size))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if media_type != JSON and (body or self.routes[path] or media_type):
            what = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
            await _send_error(send, 415, f"{what}: the request body must be {JSON}")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes exceeds {self.max_bytes} bytes"

    def _published_docs(self) -> bytes:
        if self._docs is None:
            from models_bento.openapi import published_spec

            self._docs = json.dumps(published_spec(self.service)).encode()
        return self._docs
