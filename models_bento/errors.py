"""What the scoring service answers to requests it cannot take, and the middleware that answers.

``LoadShedder`` bounds the API requests each worker has taken on: past the bound a request gets
503 with a JSON ``ErrorResponse`` and ``Retry-After`` at once, counted in
``fraud_scorer_shed_requests_total{reason="overload"}``, instead of waiting in line.

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

import json
from collections.abc import Awaitable, Callable, Collection, MutableMapping
from typing import Any

from pydantic import BaseModel, Field

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


async def _send_json(
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
    await _send_json(send, status, ErrorResponse(error=message).model_dump_json().encode())


class LoadShedder:
    """ASGI middleware: at most ``limit`` requests to ``paths`` in progress in this worker
    (waiting for the handler thread or running on it); the others are answered 503 with
    ``Retry-After`` before anything else is done for them, and counted.

    BentoML's own bound (``traffic.max_concurrency``) does the same counting but answers 429,
    which says the *client* sent too many: here the service is over capacity.
    """

    def __init__(
        self, app: ASGIApp, limit: int, paths: Collection[str], retry_after_s: int = RETRY_AFTER_S
    ) -> None:
        self.app = app
        self.limit = limit
        self.paths = frozenset(paths)
        self.in_progress = 0
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
        if self.in_progress >= self.limit:
            metrics().shed_request("overload")
            await _send_json(send, 503, self._refusal, (self._retry_after,))
            return
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


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
            await _send_json(send, 200, self._published_docs())
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
