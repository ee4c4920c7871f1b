"""``OneWriteTransport`` (models_bento/one_write.py) under uvicorn's own ``RequestResponseCycle``
(the transport below it records the writes): an answer with a Content-Length and a body goes out
in one write, byte for byte what uvicorn writes in two; what must not wait does not (100
Continue, chunked and HEAD answers), and a head held when the cycle closes the connection is
written first."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from models_bento.one_write import OneWriteTransport

JSON_BODY = b'{"ok":true}'


class Recorder:
    """The socket's side of a transport: what was written, and whether it was closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def cycle_on(
    recorder: Recorder, method: str = "POST", expect_100: bool = False, one_write: bool = True
) -> Any:
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    scope = {"type": "http", "method": method, "http_version": "1.1", "headers": []}
    cycle = RequestResponseCycle(
        scope=scope,  # type: ignore[arg-type]
        transport=recorder,  # type: ignore[arg-type]
        flow=FlowControl(recorder),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[(b"date", b"today")],
        message_event=asyncio.Event(),
        expect_100_continue=expect_100,
        keep_alive=True,
        on_response=lambda: None,
    )
    if one_write:
        cycle.transport = OneWriteTransport(recorder, cycle)
    return cycle


def start(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": headers}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


LENGTH = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(JSON_BODY))]


@pytest.mark.parametrize("chunks", [[JSON_BODY], [JSON_BODY[:4], JSON_BODY[4:]]])
def test_an_answer_with_a_length_goes_out_in_one_write_with_uvicorns_bytes(chunks: list[bytes]):
    async def answer(one_write: bool) -> Recorder:
        recorder = Recorder()
        cycle = cycle_on(recorder, one_write=one_write)
        await cycle.send(start(LENGTH))
        for i, chunk in enumerate(chunks):
            await cycle.send(body(chunk, more=i < len(chunks) - 1))
        assert cycle.response_complete
        return recorder

    held = asyncio.run(answer(one_write=True))
    plain = asyncio.run(answer(one_write=False))
    assert len(plain.writes) == 1 + len(chunks)
    assert len(held.writes) == len(chunks)  # the head went out with the first body write
    assert b"".join(held.writes) == b"".join(plain.writes)
    assert held.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert held.writes[0].endswith(b"\r\n\r\n" + chunks[0])


def test_what_must_not_wait_is_written_at_once():
    async def scenario() -> None:
        # 100 Continue: before the response starts
        recorder = Recorder()
        cycle = cycle_on(recorder, expect_100=True)
        cycle.message_event.set()
        await cycle.receive()
        assert recorder.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        # chunked: the head goes out as it comes
        recorder = Recorder()
        cycle = cycle_on(recorder)
        await cycle.send(start([(b"content-type", b"text/plain")]))
        assert len(recorder.writes) == 1 and b"transfer-encoding: chunked" in recorder.writes[0]
        # HEAD: no body will follow
        recorder = Recorder()
        cycle = cycle_on(recorder, method="HEAD")
        await cycle.send(start(LENGTH))
        await cycle.send(body(b""))
        assert len(recorder.writes) == 1 and recorder.writes[0].endswith(b"\r\n\r\n")

    asyncio.run(scenario())


def test_a_head_held_when_the_connection_closes_is_written_first():
    async def scenario() -> Recorder:
        recorder = Recorder()
        cycle = cycle_on(recorder)
        await cycle.send(start(LENGTH))
        assert recorder.writes == []  # held for the body
        cycle.transport.close()  # e.g. uvicorn after the app failed mid-answer
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.closed
    assert len(recorder.writes) == 1 and recorder.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
