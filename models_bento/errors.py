"""What the scoring service answers to requests it cannot take, and the middleware that answers.

Past capacity: ``models_bento.shedding`` (503 with an ``ErrorResponse`` and ``Retry-After``).

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
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from fraud_platform.lib.contracts.events import MAX_PAYLOAD_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON = "application/json"
DOCS_PATH = "/docs.json"
REJECTED_REQUEST = "rejected request (%s): %s"  # log line: path, field_errors()


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


class QuietRejectedRequests(logging.Filter):
    """BentoML logs every request that fails validation as an ERROR with a traceback and the
    request body (user ids, IPs). A client error is not a server error: log one WARNING line
    with the field errors only (no input values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            record.msg = REJECTED_REQUEST
            record.args = (record.args[0] if record.args else "?", field_errors(exc))
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True
