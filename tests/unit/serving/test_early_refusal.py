"""``EarlyRefusalProtocol`` (models_bento/early_refusal.py) in a real uvicorn server, in process:
past the bound, a request the shedder would refuse at once is answered by the HTTP protocol
with the bytes the shedder's own 503 has (the same server with uvicorn's protocol gives the
reference), without reaching the ASGI application, counted as the shedder counts; the
connection stays usable (the refused request's body dropped, even when it arrives later); what
the shedder would not refuse at once still goes through the application.

The client is a raw socket, so what is compared is what goes on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from models_bento import early_refusal
from models_bento.shedding import FrontDoor

PATH = "/score"
BODY = b'{"x": 1}'


def post(path: str = PATH, body: bytes = BODY, extra: bytes = b"") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    return head.encode() + extra + f"Content-Length: {len(body)}\r\n\r\n".encode() + body


class Reached:
    """The outermost ASGI layer (uvicorn calls it): records the paths that reached the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.paths: list[str] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"] + "?" + scope["query_string"].decode())
        await self.app(scope, receive, send)


def application(release: asyncio.Event) -> Reached:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def held(request: Any) -> JSONResponse:
        await request.body()
        await release.wait()
        return JSONResponse({"ok": True})

    options = {"limit": 1, "paths": [PATH], "max_wait_s": 0}
    return Reached(
        Starlette(
            routes=[Route(PATH, held, methods=["POST"])],
            middleware=[Middleware(FrontDoor, **options)],
        )
    )


@contextlib.asynccontextmanager
async def serving(protocol: Any, app: Any) -> AsyncIterator[int]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol, log_config=None, lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        early_refusal.set_front_shedder(None)


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(status, the whole answer as sent: headers and body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(re.search(rb"content-length: (\d+)", head.lower())[1])
    body = await asyncio.wait_for(reader.readexactly(length), 5)
    return int(head.split(b" ", 2)[1]), head + body


def without_date(raw: bytes) -> bytes:
    return re.sub(rb"date: [^\r]*\r\n", b"date: -\r\n", raw)


def shed_count(reason: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("fraud_scorer_shed_requests_total", {"reason": reason})
    return value or 0.0


async def refusal_scenario(protocol: Any) -> dict[str, Any]:
    """One request held in progress (the bound), then on a second connection: a refused one,
    one whose body comes later, one with a query string; then, released, one scored."""
    release = asyncio.Event()
    app = application(release)
    before = shed_count("overload")
    out: dict[str, Any] = {}
    async with serving(protocol, app) as port:
        first_r, first_w = await asyncio.open_connection("127.0.0.1", port)
        first_w.write(post())
        while not app.paths:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(post())
        out["refused"] = await answer(reader)
        request = post()
        writer.write(request[:-3])  # the body split across packets
        await asyncio.sleep(0.05)
        writer.write(request[-3:])
        out["split"] = await answer(reader)
        writer.write(post(PATH + "?a=1"))
        out["query"] = await answer(reader)
        out["reached_while_held"] = list(app.paths)
        out["shed"] = shed_count("overload") - before
        release.set()
        out["first"] = await answer(first_r)
        writer.write(post())  # the same connection, once the place is free
        out["after"] = await answer(reader)
        for w in (first_w, writer):
            w.close()
    return out


def access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    caplog.clear()
    return lines


def test_refusals_at_once_never_reach_the_application_and_keep_the_connection(
    caplog: pytest.LogCaptureFixture,
):
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert early_refusal.install()
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    early = asyncio.run(refusal_scenario(early_refusal.EarlyRefusalProtocol))
    early_log = access_lines(caplog)
    plain = asyncio.run(refusal_scenario(HttpToolsProtocol))
    plain_log = access_lines(caplog)

    for got in (early, plain):
        assert got["refused"][0] == got["split"][0] == got["query"][0] == 503
        assert got["first"][0] == got["after"][0] == 200
        assert got["shed"] == 3
    # uvicorn's protocol runs the application for every request; the early one only for the
    # held request and the one it does not refuse (a query string)
    assert plain["reached_while_held"] == ["/score?", "/score?", "/score?", "/score?a=1"]
    assert early["reached_while_held"] == ["/score?", "/score?a=1"]
    # byte for byte what the shedder answers through uvicorn (the date aside)
    for key in ("refused", "split", "query"):
        assert without_date(early[key][1]) == without_date(plain["refused"][1]), key
    for key in ("first", "after"):  # the answers it lets through (one write each: one_write.py)
        assert without_date(early[key][1]) == without_date(plain[key][1]), key
    assert b"retry-after: 1\r\n" in early["refused"][1]
    # uvicorn's access log lines, the client's port aside
    assert [re.sub(r":\d+ ", " ", line) for line in early_log] == [
        re.sub(r":\d+ ", " ", line) for line in plain_log
    ]
    assert sum('"POST /score HTTP/1.1" 503' in line for line in early_log) == 2
    assert re.search(rb"\r\ndate: [^\r]+\r\n", early["refused"][1])


@pytest.mark.parametrize(
    "request_bytes",
    [
        post(extra=b"Connection: close\r\n"),  # uvicorn adds its own header then: its path
        b"GET /score HTTP/1.1\r\nHost: t\r\n\r\n",  # not the API's method
        post("/other"),  # not a bounded path
    ],
    ids=["connection-close", "get", "other-path"],
)
def test_requests_it_does_not_refuse_go_through_uvicorn(request_bytes: bytes):
    async def scenario() -> list[str]:
        release = asyncio.Event()
        app = application(release)
        async with serving(early_refusal.EarlyRefusalProtocol, app) as port:
            held_r, held_w = await asyncio.open_connection("127.0.0.1", port)
            held_w.write(post())
            while not app.paths:
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes)
            await answer(reader)
            release.set()
            await answer(held_r)
            for w in (held_w, writer):
                w.close()
        return app.paths

    paths = asyncio.run(scenario())
    assert len(paths) == 2  # the held request and this one


def test_without_a_shedder_in_front_nothing_is_refused_early():
    async def scenario() -> tuple[int, list[str]]:
        release = asyncio.Event()
        release.set()
        app = application(release)
        async with serving(early_refusal.EarlyRefusalProtocol, app) as port:
            early_refusal.set_front_shedder(None)  # e.g. not installed (yet)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post())
            status, _ = await answer(reader)
            writer.close()
        return status, app.paths

    assert asyncio.run(scenario()) == (200, ["/score?"])
