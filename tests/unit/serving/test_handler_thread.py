"""``HandlerThread`` (models_bento/handler_thread.py): calls run on its one thread, in order,
results and exceptions come back to the awaiting coroutine, and a call cancelled before the
thread takes it up is not run."""

from __future__ import annotations

import asyncio
import threading

import pytest

from models_bento.handler_thread import HandlerThread


def test_calls_run_on_one_thread_in_order_and_return_their_results():
    handler = HandlerThread("test-handler")
    ran: list[tuple[int, str]] = []

    def work(n: int) -> int:
        ran.append((n, threading.current_thread().name))
        return n * n

    async def scenario() -> list[int]:
        return await asyncio.gather(*(handler.call(work, n) for n in range(20)))

    assert asyncio.run(scenario()) == [n * n for n in range(20)]
    assert [n for n, _ in ran] == list(range(20))
    assert {name for _, name in ran} == {"test-handler"}
    assert threading.main_thread().name not in {name for _, name in ran}
    handler.stop()


def test_an_exception_reaches_the_caller_and_the_thread_goes_on():
    handler = HandlerThread("test-handler")

    def fail() -> None:
        raise ValueError("boom")

    async def scenario() -> str:
        with pytest.raises(ValueError, match="boom"):
            await handler.call(fail)
        return await handler.call(str.upper, "still here")

    assert asyncio.run(scenario()) == "STILL HERE"
    handler.stop()


def test_a_call_cancelled_before_it_starts_is_not_run():
    handler = HandlerThread("test-handler")
    gate = threading.Event()
    ran: list[str] = []

    async def scenario() -> None:
        blocking = handler.call(gate.wait, 5)  # holds the thread
        cancelled = handler.call(ran.append, "cancelled")
        cancelled.cancel()
        gate.set()
        assert await blocking is True
        await handler.call(ran.append, "after")

    asyncio.run(scenario())
    assert ran == ["after"]
    handler.stop()
