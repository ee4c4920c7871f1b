"""Past capacity the scoring service answers 503 at once instead of queueing for seconds.

``LoadShedder`` bounds the API requests each worker has taken on: past the bound a request waits
in a short line bounded in time, and gets 503 with a JSON ``ErrorResponse`` and ``Retry-After``
when that time is up (``fraud_scorer_shed_requests_total{reason="queue_timeout"}``) or at once
when the line cannot move in time (``reason="overload"``).

``FrontDoor`` puts the shedder in front of everything else in the worker's ASGI app. Added with
``add_asgi_middleware`` like any middleware, BentoML places it inside its own: Starlette's error
middleware, BentoML's HTTP metrics, OpenTelemetry (which parses the URL even for excluded
routes) and the timeout. At twice capacity half the requests are refused, and each refusal paid
that whole stack: ~0.2 ms of CPU, out of ~1.6 ms for a scored request (py-spy, 2026-12-06: the
stack outside ours was ~15% of the event loop's samples). ``FrontDoor`` refuses before any of
it: a refusal costs uvicorn's parsing and ours.

Beneath even that, ``models_bento.early_refusal`` lets uvicorn's HTTP protocol answer the 503s
this shedder would give at once (``refuse_now``) before any ASGI work starts for them.

What that changes for operators: a refused request is counted only by our
``fraud_scorer_shed_requests_total`` (by reason), no longer in BentoML's
``bentoml_service_request_total``/duration series, which now count the requests admitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Collection
from typing import Any

from fraud_platform.lib.serving.metrics import metrics
from models_bento.early_refusal import set_front_shedder
from models_bento.errors import JSON, ASGIApp, ErrorResponse, Receive, Scope, Send

log = logging.getLogger("bentoml.fraud_scorer")

RETRY_AFTER_S = 1
HOLD_SMOOTHING = 0.1  # weight of the latest request in LoadShedder's smoothed hold time


class LoadShedder:
    """ASGI middleware: at most ``limit`` requests to ``paths`` in progress in this worker
    (parsed, on the handler thread or answering); the next ones wait in line (first come, first
    served) at most ``max_wait_s`` for a place, then get 503 with ``Retry-After``
    (``reason="queue_timeout"``). A request that would wait longer than that by the current
    rate of progress (the line's length times the recent time a place is held, over ``limit``)
    gets its 503 at once (``reason="overload"``), so does one past ``max_waiting``.
    ``max_wait_s=0``: no line, 503 at once past the bound.

    A burst is not overload (``burst_s``): a request that joins a line younger than
    ``burst_s`` (or forms one) may wait ``burst_s``, by the same two rules; only a line that
    has stood longer, one that did not drain in ``burst_s`` (requests come faster than they
    leave: overload), gets ``max_wait_s``. CoDel's idea (a queue is bad when it does not empty
    within an interval) as "Fail at Scale" (ACM Queue, 2015) applies it to a server's queue.
    Why: a worker stalled for tens of ms (a neighbour's CPU burst, a collection, a slow Redis
    reply) at 1/6 of capacity came back to 2-5 requests and a hold time the stall had inflated
    (8-20 ms): the pace rule refused them at once and the 10 ms line timed the others out, 484
    of 18,000 requests in a minute at 300 req/s (2026-12-06, load 5: 215 overload, 269
    queue_timeout).

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
        burst_s: float = 0.0,
        retry_after_s: int = RETRY_AFTER_S,
    ) -> None:
        self.app = app
        self.limit = limit
        self.paths = frozenset(paths)
        self.raw_paths = frozenset(path.encode() for path in self.paths)  # as uvicorn reads them
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting if max_wait_s > 0 else 0
        self.burst_s = burst_s
        self.in_progress = 0
        self.waiting = 0
        self.formed = 0.0  # when the line last went from empty to one waiting (loop time)
        self._line: deque[asyncio.Future[bool]] = deque()
        # smoothed seconds a place is held (admission to the last byte of the answer)
        self.hold_s = 0.0
        refusal = (
            ErrorResponse(
                error=f"over capacity: {limit} requests already in progress in this worker; "
                f"retry after {retry_after_s} s"
            )
            .model_dump_json()
            .encode()
        )
        self._refusal_start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", JSON.encode()),
                (b"content-length", str(len(refusal)).encode()),
                (b"retry-after", str(retry_after_s).encode()),
            ],
        }
        self._refusal_body = {"type": "http.response.body", "body": refusal, "more_body": False}
        self.refusal = (self._refusal_start, refusal)  # what the 503 is made of
        self._shed = metrics().shed_request

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
                self._shed(refused)
                await send(dict(self._refusal_start))
                await send(self._refusal_body)
                return
        admitted = time.perf_counter()
        held = True

        async def send_then_release(message: dict[str, Any]) -> None:
            # The place is free once the answer's last byte is written, not when the app
            # returns: ScoreRoute logs the decision after answering, and a keep-alive client's
            # next request, parsed before that, was refused by early_refusal for the place
            # its own previous request still held.
            nonlocal held
            await send(message)
            if held and message["type"] == "http.response.body" and not message.get("more_body"):
                held = False
                self._done(admitted)

        try:
            await self.app(scope, receive, send_then_release)
        finally:
            if held:
                self._done(admitted)

    def _done(self, admitted: float) -> None:
        self.hold_s += (time.perf_counter() - admitted - self.hold_s) * HOLD_SMOOTHING
        self._release()

    def refuse_now(self) -> str | None:
        """Why a request arriving now would be refused at once (``"overload"``), None when it
        would be admitted or wait in line. For ``early_refusal``: the request is not counted."""
        if self.in_progress < self.limit:
            return None
        return self._refusal_reason()

    def count_refusal(self, reason: str) -> None:
        """Count a refusal made on this shedder's behalf (``early_refusal``)."""
        self._shed(reason)

    def _refusal_reason(self) -> str | None:
        """``"overload"`` when waiting in line would be pointless: no line, a full one, or one
        that will not have moved enough within the wait allowed (``_allowed_wait_s``)."""
        if self.waiting >= self.max_waiting:
            return "overload"
        if (self.waiting + 1) * self.hold_s > self._allowed_wait_s() * self.limit:
            return "overload"
        return None

    def _allowed_wait_s(self) -> float:
        """How long a request joining the line now may wait: ``burst_s`` while the line is
        younger than that (or empty), ``max_wait_s`` once it has stood longer."""
        if self.burst_s <= self.max_wait_s:
            return self.max_wait_s
        if self.waiting and asyncio.get_running_loop().time() - self.formed >= self.burst_s:
            return self.max_wait_s
        return self.burst_s

    async def _wait_in_line(self) -> str | None:
        """None once handed a place (by ``_release``), ``"queue_timeout"`` after the wait
        allowed on arrival (``_allowed_wait_s``)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(self._allowed_wait_s(), _give_up, waiter)
        if not self.waiting:
            self.formed = loop.time()
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


class FrontDoor:
    """ASGI middleware that installs a ``LoadShedder`` (``options``) in front of the whole
    application it is part of, then steps aside.

    Starlette builds its middleware stack on the first call (the lifespan startup, before any
    request) and calls ``app.middleware_stack`` for every one after; ``scope["app"]`` is that
    application. On that first call this middleware wraps ``middleware_stack`` in the shedder.
    An application that is not a Starlette one (no ``middleware_stack``) gets the shedder
    here, where it was added (logged).
    """

    def __init__(
        self, app: ASGIApp, front: Callable[[ASGIApp], ASGIApp] | None = None, **options: Any
    ) -> None:
        """``front``: wraps the stack before the shedder does (``ScoreRoute`` in front)."""
        self.app = app
        self.front = front
        self.options = options
        self.shedder: LoadShedder | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.shedder is None:
            self._install(scope.get("app"))
        await self.app(scope, receive, send)

    def _install(self, application: Any) -> None:
        stack = getattr(application, "middleware_stack", None)
        if stack is None:
            log.warning("no Starlette middleware stack to front: load shedding inside it")
            inner = self.app if self.front is None else self.front(self.app)
            self.shedder = self.app = LoadShedder(inner, **self.options)
            return
        if self.front is not None:
            stack = self.front(stack)
        self.shedder = application.middleware_stack = LoadShedder(stack, **self.options)
        # in front of everything: what it refuses at once, the HTTP protocol may refuse for it
        set_front_shedder(self.shedder)
