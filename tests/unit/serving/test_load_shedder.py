"""LoadShedder (models_bento/shedding.py) as an ASGI middleware, in process: past the bound a
request waits in line (first come, first served) at most ``max_wait_s``, then gets 503
``queue_timeout``; a line that cannot move in time, or no line at all (``max_wait_s=0``), is a
503 ``overload`` at once. The app behind it holds its place until the test lets it go, so what is
checked is the order of events, not timings (the waits are 10-100x apart).

The end-to-end behaviour against a real ``bentoml serve`` is tests/serving/test_overload.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from models_bento.shedding import RETRY_AFTER_S, FrontDoor, LoadShedder

PATH = "/score"
LONG_S = 5.0  # never reached: a request released before it
SHORT_S = 0.05


class HeldApp:
    """An ASGI app answering 200 once the test releases the request (by arrival order)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.release: dict[int, asyncio.Event] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan: nothing to start
        number = scope["number"]
        self.started.append(number)
        await self.release.setdefault(number, asyncio.Event()).wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def let_go(self, number: int) -> None:
        self.release.setdefault(number, asyncio.Event()).set()


async def request(shedder: LoadShedder, number: int) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "path": PATH, "number": number}
    await shedder(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def shed_count(reason: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("fraud_scorer_shed_requests_total", {"reason": reason})
    return value or 0.0


def test_past_the_bound_a_request_waits_and_is_served_in_arrival_order():
    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=1, paths=[PATH], max_wait_s=LONG_S)
        tasks = [asyncio.create_task(request(shedder, n)) for n in range(3)]
        await settle()
        assert app.started == [0]  # the bound: one in progress, two in line
        assert (shedder.in_progress, shedder.waiting) == (1, 2)
        app.let_go(0)
        await settle()
        assert app.started == [0, 1]
        app.let_go(2)  # released early: it still waits for its turn
        await settle()
        assert app.started == [0, 1]
        app.let_go(1)
        answers = await asyncio.gather(*tasks)
        assert app.started == [0, 1, 2]
        assert [status for status, _, _ in answers] == [200, 200, 200]
        assert (shedder.in_progress, shedder.waiting) == (0, 0)

    asyncio.run(scenario())


def test_a_request_waiting_longer_than_the_limit_gets_503_queue_timeout():
    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=1, paths=[PATH], max_wait_s=SHORT_S)
        before = shed_count("queue_timeout")
        first = asyncio.create_task(request(shedder, 0))
        await settle()
        # waits SHORT_S, then refused
        status, headers, body = await asyncio.wait_for(request(shedder, 1), timeout=LONG_S)
        assert status == 503
        assert headers["retry-after"] == str(RETRY_AFTER_S)
        assert "over capacity" in json.loads(body)["error"]
        assert app.started == [0]
        assert shed_count("queue_timeout") == before + 1
        app.let_go(0)
        assert (await first)[0] == 200
        assert (shedder.in_progress, shedder.waiting) == (0, 0)
        app.let_go(2)
        assert (await request(shedder, 2))[0] == 200  # the place was freed, not leaked

    asyncio.run(scenario())


def test_without_a_line_past_the_bound_is_503_overload_at_once():
    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=2, paths=[PATH], max_wait_s=0)
        before = shed_count("overload")
        held = [asyncio.create_task(request(shedder, n)) for n in range(2)]
        await settle()
        status, _, _ = await asyncio.wait_for(request(shedder, 2), timeout=LONG_S)
        assert status == 503
        assert shed_count("overload") == before + 1
        assert app.started == [0, 1]
        for n in range(2):
            app.let_go(n)
        assert [a[0] for a in await asyncio.gather(*held)] == [200, 200]

    asyncio.run(scenario())


def test_a_line_that_cannot_move_in_time_is_refused_at_once():
    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=1, paths=[PATH], max_wait_s=SHORT_S)
        shedder.hold_s = 10 * SHORT_S  # each place recently held 10x the allowed wait
        before = shed_count("overload")
        held = asyncio.create_task(request(shedder, 0))
        await settle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        status, _, _ = await request(shedder, 1)
        assert status == 503
        assert loop.time() - started < SHORT_S  # not after waiting out the limit
        assert shed_count("overload") == before + 1
        app.let_go(0)
        assert (await held)[0] == 200

    asyncio.run(scenario())


def test_other_paths_are_not_bounded():
    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=1, paths=["/other"], max_wait_s=0)
        tasks = [asyncio.create_task(request(shedder, n)) for n in range(3)]
        await settle()
        assert app.started == [0, 1, 2]
        for n in range(3):
            app.let_go(n)
        assert [a[0] for a in await asyncio.gather(*tasks)] == [200, 200, 200]

    asyncio.run(scenario())


class Outer:
    """A middleware standing for BentoML's (HTTP metrics, tracing): counts what reaches it."""

    def __init__(self, app: Any, seen: list[int]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen.append(scope["number"])
        await self.app(scope, receive, send)


def test_front_door_refuses_in_front_of_the_middlewares_added_before_it():
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    async def scenario() -> None:
        held = HeldApp()
        seen: list[int] = []
        options = {"limit": 1, "paths": [PATH], "max_wait_s": 0}
        application = Starlette(
            middleware=[Middleware(Outer, seen=seen), Middleware(FrontDoor, **options)]
        )
        application.router = held  # type: ignore[assignment]  (the routes: held requests)
        sent: list[dict] = []

        async def lifespan_receive() -> dict:
            return {"type": "lifespan.shutdown"}

        async def collect(message: dict) -> None:
            sent.append(message)

        # the first call builds the stack; FrontDoor puts the shedder in front of it
        await application({"type": "lifespan"}, lifespan_receive, collect)
        assert isinstance(application.middleware_stack, LoadShedder)

        async def call(number: int) -> int:
            answer: list[dict] = []

            async def send(message: dict) -> None:
                answer.append(message)

            async def receive() -> dict:
                return {"type": "http.request", "body": b"", "more_body": False}

            scope = {"type": "http", "path": PATH, "number": number}
            await application(scope, receive, send)
            return answer[0]["status"]

        first = asyncio.create_task(call(0))
        await settle()
        assert await asyncio.wait_for(call(1), timeout=LONG_S) == 503
        assert seen == [0]  # the refusal never reached the middleware outside FrontDoor
        held.let_go(0)
        assert await first == 200

    asyncio.run(scenario())


def test_the_place_is_free_once_the_answer_is_sent():
    """An app that works on after its answer (ScoreRoute logs the decision then) no longer
    holds the place: the next request is admitted, not refused."""

    async def scenario() -> None:
        after_answer = asyncio.Event()

        async def app(scope: dict, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            await after_answer.wait()

        shedder = LoadShedder(app, limit=1, paths=[PATH], max_wait_s=0)
        first = asyncio.create_task(request(shedder, 0))
        await settle()
        assert not first.done() and shedder.in_progress == 0
        assert shedder.refuse_now() is None
        second = asyncio.create_task(request(shedder, 1))
        await settle()
        assert not second.done() and shedder.in_progress == 0  # admitted and answered
        after_answer.set()
        answers = await asyncio.gather(first, second)
        assert [status for status, _, _ in answers] == [200, 200]
        assert shedder.in_progress == 0

    asyncio.run(scenario())


def test_a_burst_waits_burst_s_not_just_max_wait_s():
    """A line younger than ``burst_s`` is a burst (a stalled worker catching up), not overload:
    its requests wait past ``max_wait_s``, even when the recent hold time says the line is slow."""

    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=1, paths=[PATH], max_wait_s=0.01, burst_s=LONG_S)
        shedder.hold_s = 0.03  # a stall inflated it: 3x max_wait_s (the pace rule's refusal)
        before = {r: shed_count(r) for r in ("overload", "queue_timeout")}
        held = asyncio.create_task(request(shedder, 0))
        await settle()
        waiting = [asyncio.create_task(request(shedder, n)) for n in (1, 2)]
        await asyncio.sleep(0.1)  # 10x max_wait_s
        assert not any(task.done() for task in waiting)
        assert (shedder.in_progress, shedder.waiting) == (1, 2)
        for n in range(3):
            app.let_go(n)
        answers = await asyncio.gather(held, *waiting)
        assert [status for status, _, _ in answers] == [200, 200, 200]
        assert {r: shed_count(r) for r in before} == before

    asyncio.run(scenario())


def test_a_line_standing_longer_than_burst_s_gets_max_wait_and_the_pace_rule():
    """Overload: a line that has not drained in ``burst_s``; a request joining it waits at most
    ``max_wait_s``, or is refused at once when the line's pace says it would wait longer."""

    async def scenario() -> None:
        app = HeldApp()
        shedder = LoadShedder(app, limit=1, paths=[PATH], max_wait_s=SHORT_S, burst_s=LONG_S)
        loop = asyncio.get_running_loop()
        held = asyncio.create_task(request(shedder, 0))
        await settle()
        first = asyncio.create_task(request(shedder, 1))  # forms the line: may wait LONG_S
        await settle()
        shedder.formed = loop.time() - 2 * LONG_S  # the line has stood longer than burst_s
        timeouts = shed_count("queue_timeout")
        started = loop.time()
        status, _, _ = await asyncio.wait_for(request(shedder, 2), timeout=LONG_S)
        assert status == 503
        assert loop.time() - started < LONG_S / 2  # after max_wait_s, not at the line's age
        assert shed_count("queue_timeout") == timeouts + 1
        assert not first.done()  # the burst's request still waits its turn

        shedder.hold_s = 10 * SHORT_S
        overloads = shed_count("overload")
        started = loop.time()
        status, _, _ = await request(shedder, 3)
        assert status == 503
        assert loop.time() - started < SHORT_S  # at once
        assert shed_count("overload") == overloads + 1
        app.let_go(0)
        app.let_go(1)
        assert [(await held)[0], (await first)[0]] == [200, 200]

    asyncio.run(scenario())
