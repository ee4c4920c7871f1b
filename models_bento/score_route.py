"""The hot route: ``POST /score`` answered by an ASGI middleware, below BentoML's API machinery.

Why: profiled at 150 req/s on one worker (py-spy, per-thread CPU from /proc), a /score request
cost ~2.7 ms of server CPU: the scoring itself ~0.73 ms, background threads ~0.3 ms, the event
loop the rest, of which uvicorn ~38% and BentoML's per-request path most of the remainder:
routing, its context middleware, the IO descriptor and serde, ``api_endpoint`` and the hand-off
to the handler thread (README, "Scoring under load"). The /ping floor pays the same path.

``ScoreRoute`` sits in front of BentoML's middlewares (``FrontDoor`` installs it behind
``LoadShedder``, which refuses before any body is read): Starlette's error middleware,
BentoML's HTTP metrics, OpenTelemetry's excluded-URL check (the API routes are not traced) and
the timeout no longer run for ``/score``. It applies ``RequestGuard``'s content type and size
limits itself (``guard``) and records BentoML's request metrics after the answer
(``count_requests``, ``traffic_metrics.py``): same run, 300 req/s, three ``--quick`` runs
(the first before the recording and the guard) against the route inside them
(``FRAUD_PLATFORM_SCORING_ROUTE_FRONT=false``): ``/score`` p50
over ``/ping``'s 1.25 / 1.26 / 1.28 against 1.45 / 1.32 / 1.32, p50 1.39 / 1.59 / 1.59 ms
against 1.45 / 1.63 / 1.66. Inside them (innermost) when that setting is off, the access log
is on (BentoML's middleware writes it) or there is no concurrency bound. What it keeps
identical:

* validation: ``TransactionRequest.model_validate_json`` on the body, as BentoML's JSON serde
  calls it, and BentoML's 400 body (``errors.validation_error_body``), logged as one WARNING
  line like ``errors.QuietRejectedRequests`` makes of BentoML's log;
* the answer: ``FraudScorer.answer`` (``decide``, which the BentoML API calls, is ``answer`` then
  its ``finish``), serialized by pydantic as BentoML's serde does; an exception is BentoML's 500
  body, logged with its traceback;
* the feature lookup: sent to Redis from here (``FraudScorer.prefetch``,
  ``fraud_platform.lib.serving.prefetch``) and its reply awaited on the event loop;
* the decision log and the metrics: ``finish`` runs on the event loop once the answer is sent
  (written to the socket), so the client does not wait for them;
* the OpenAPI document, the bento and hot reload: the ``/score`` API is still declared on the
  service, and answers the requests that arrive before the service instance is ready.

A request whose lookup went to Redis ahead is scored on the event loop once the reply is in: it
yields while Redis works, so requests behind it are read, admitted or refused by
``LoadShedder`` meanwhile. Without a pipe (TLS, a Redis Cluster, before the first lookup
through the client opens one) it is scored on one handler thread per worker
(``HandlerThread``), whose lookup blocks. Scoring on the loop with a lookup that blocked it
(2026-12-06) left ``LoadShedder`` blind: the backlog waited unseen in the socket, p50 174 ms /
p99 3.1 s at 300 req/s with nothing shed. Awaited instead (2026-12-07, same run as the handler
thread's route, ``--baseline-src``): server CPU per request 1.26 vs 1.54 ms at 300 req/s,
capacity 1,350 vs 788 req/s, goodput at 2x capacity 107% of it with answered p99 24 ms.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from models_bento.errors import (
    REJECTED_REQUEST,
    ASGIApp,
    ErrorResponse,
    Message,
    Receive,
    Scope,
    Send,
    field_errors,
    send_json,
    validation_error_body,
)
from models_bento.handler_thread import HandlerThread
from models_bento.schemas import TransactionRequest
from models_bento.traffic_metrics import TrafficMetrics

log = logging.getLogger("bentoml.fraud_scorer")

REQUEST_ID_HEADER = b"x-request-id"
# what BentoML answers when an API raises (api_endpoint_wrapper)
INTERNAL_ERROR = (
    ErrorResponse(error="An unexpected error has occurred, please check the server log.")
    .model_dump_json()
    .encode()
)


class Scorer(Protocol):
    def prefetch(self, txn: dict[str, Any]) -> Any: ...

    def answer(
        self, txn: dict[str, Any], request_id: str | None = None, sent: Any = None
    ) -> tuple[BaseModel, Callable[[], None]]: ...


class ScoreRoute:
    """ASGI middleware: answers ``POST path`` with ``scorer().decide`` once ``scorer()`` returns
    the service instance (None: not ready, the request goes on to BentoML's route)."""

    def __init__(
        self,
        app: ASGIApp,
        scorer: Callable[[], Scorer | None],
        server_name: str,
        path: str = "/score",
        *,
        guard: Callable[[ASGIApp], ASGIApp] | None = None,
        count_requests: bool = False,
    ) -> None:
        """In front of BentoML's stack (``app``): ``guard`` wraps the route in the checks the
        stack would have applied (``RequestGuard``), and ``count_requests`` records BentoML's
        HTTP request metrics after each answer (``traffic_metrics``)."""
        self.app = app
        self.scorer = scorer
        self.path = path
        self._headers = ((b"server", f"BentoML Service/{server_name}".encode()),)
        self._fields = tuple(TransactionRequest.model_fields)
        # started on first use, in the worker process
        self._handler = HandlerThread("score")
        self._route: ASGIApp = self._score if guard is None else guard(self._score)
        self._traffic = TrafficMetrics(app) if count_requests else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != self.path
            or scope["method"] != "POST"
            or self.scorer() is None
        ):
            await self.app(scope, receive, send)
            return
        if self._traffic is None:
            await self._route(scope, receive, send)
            return
        started = time.perf_counter()
        status, answered = 0, 0.0

        async def counted(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
            elif not message.get("more_body", False):
                answered = time.perf_counter()
            await send(message)

        await self._route(scope, receive, counted)
        if status:  # after the decision log and our metrics: off the answer's path
            try:
                elapsed = (answered or time.perf_counter()) - started
                self._traffic.record(self.path, status, elapsed)
            except Exception:
                log.exception("BentoML's request metrics of %s not recorded", self.path)

    async def _score(self, scope: Scope, receive: Receive, send: Send) -> None:
        scorer = self.scorer()
        if scorer is None:  # swapped out meanwhile (shutdown): as if not ready
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            return  # the client is gone
        try:
            txn = TransactionRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            log.warning(REJECTED_REQUEST, self.path, field_errors(exc))
            await send_json(send, 400, validation_error_body(exc), self._headers)
            return
        fields = {name: getattr(txn, name) for name in self._fields}
        try:
            sent = scorer.prefetch(fields)
            if sent is None:  # no pipe to Redis (yet): asked through the client, on the thread
                payload, finish = await self._handler.call(
                    _answer, scorer, fields, request_id(scope), None
                )
            else:
                with contextlib.suppress(Exception):  # the lookup reads the failure, degrades
                    await sent.reply
                payload, finish = _answer(scorer, fields, request_id(scope), sent)
        except Exception:
            log.exception("Exception on %s [POST]", self.path)
            await send_json(send, 500, INTERNAL_ERROR, self._headers)
            return
        await send_json(send, 200, payload, self._headers)
        try:  # the decision log and the metrics: once the answer is on its way
            finish()
        except Exception:
            log.exception("Exception on %s [POST] after answering", self.path)


def _answer(
    scorer: Scorer, fields: dict[str, Any], request_id: str | None, sent: Any
) -> tuple[bytes, Callable[[], None]]:
    response, finish = scorer.answer(fields, request_id, sent)
    return response.model_dump_json().encode(), finish


def request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode("latin-1") or None
    return None


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
