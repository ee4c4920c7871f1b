"""Feature lookups sent ahead on the event loop (``FeatureLookup.send``, ``prefetch.ScriptPipe``)
against the real Redis: the same answers as a lookup through the client, each reply to its own
request (also when one is cancelled), after the script cache is flushed, when Redis drops the
connection and when it stops answering."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
import redis
from prometheus_client import REGISTRY

from fraud_platform.lib.contracts.events import TRANSACTIONS, validate_record
from fraud_platform.lib.serving.lookup import FeatureLookup, online_store_client
from fraud_platform.lib.serving.prefetch import PipeBroken, ScriptPipe

from .conftest import REDIS_URL, Customer

pytestmark = pytest.mark.serving


def record_of(customer: Customer, **overrides) -> dict:
    body = customer.transaction(**overrides)
    return validate_record(
        TRANSACTIONS, {"schema_version": 1, **body, "event_time": datetime.now(UTC).isoformat()}
    )


def on_loop(body: Callable[[FeatureLookup], Awaitable[None]]) -> None:
    """``body(lookup)`` on an event loop, as the scoring service's worker runs it."""

    async def main() -> None:
        lookup = FeatureLookup(online_store_client(REDIS_URL), retry_after_s=0.3)
        try:
            await body(lookup)
        finally:
            lookup.close()
            await asyncio.sleep(0.01)  # the pipe closes on the loop

    asyncio.run(main())


async def piped(lookup: FeatureLookup, customer: Customer) -> None:
    """Make ``lookup`` open its pipe: a send is wanted, then a lookup through the client."""
    assert lookup.send(record_of(customer)) is None  # no pipe yet
    assert not lookup.lookup(record_of(customer)).degraded
    for _ in range(200):
        if lookup._pipe is not None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no pipe opened")


async def answered(lookup: FeatureLookup, txn: dict, sent) -> object:
    """What ``ScoreRoute`` does with a sent lookup: wait for its reply, then read it."""
    assert sent is not None
    try:
        await sent.reply
    except Exception:  # noqa: BLE001 - the lookup reads the failure
        pass
    return lookup.lookup(txn, sent=sent)


def test_sent_lookup_answers_as_the_client_does(customer: Customer):
    async def body(lookup: FeatureLookup) -> None:
        await piped(lookup, customer)
        for overrides in ({}, {"device_id": "d-never-seen"}, {"amount": 9.5}):
            txn = record_of(customer, **overrides)
            found = await answered(lookup, txn, lookup.send(txn))
            assert found == lookup.lookup(txn)
            assert not found.degraded

    on_loop(body)


def test_each_reply_answers_its_own_request(customer: Customer):
    async def body(lookup: FeatureLookup) -> None:
        await piped(lookup, customer)
        known, unknown = record_of(customer), record_of(customer, device_id="d-never-seen")
        cancelled = lookup.send(known)  # a request that went away before its reply
        first, second = lookup.send(known), lookup.send(unknown)
        cancelled.reply.cancel()
        # read in the other order than sent, as tasks resume
        found_unknown = await answered(lookup, unknown, second)
        found_known = await answered(lookup, known, first)
        assert found_unknown == lookup.lookup(unknown)
        assert found_unknown.age_seconds["user_device_history_v1"] is None  # its own reply
        assert found_known == lookup.lookup(known)
        assert found_known.age_seconds["user_device_history_v1"] is not None
        again = lookup.send(known)
        assert await answered(lookup, known, again) == lookup.lookup(known)

    on_loop(body)


def test_flushed_script_is_loaded_again(customer: Customer, redis_client: redis.Redis):
    async def body(lookup: FeatureLookup) -> None:
        await piped(lookup, customer)
        txn = record_of(customer)
        expected = lookup.lookup(txn)
        redis_client.script_flush()
        first, second = lookup.send(txn), lookup.send(txn)
        assert await answered(lookup, txn, first) == expected  # NOSCRIPT: through the client
        assert await answered(lookup, txn, second) == expected
        third = lookup.send(txn)  # the pipe is still in step
        assert third is not None and await answered(lookup, txn, third) == expected

    on_loop(body)


def test_dropped_connection_degrades_then_recovers(customer: Customer, redis_client: redis.Redis):
    async def body(lookup: FeatureLookup) -> None:
        await piped(lookup, customer)
        txn = record_of(customer)
        host, port = lookup._pipe.local_address[:2]
        redis_client.client_kill(f"{host}:{port}")
        first, second = lookup.send(txn), lookup.send(txn)  # before the loop sees it closed
        failed = await answered(lookup, txn, first)
        assert failed.degraded and "online store unavailable" in failed.degraded_reason
        # behind it on the same connection: not tried again, as any lookup within retry_after_s
        skipped = await answered(lookup, txn, second)
        assert skipped.degraded and skipped.values == {}
        assert lookup.send(txn) is None  # nothing sent while Redis is being skipped
        await asyncio.sleep(0.35)
        assert lookup.send(txn) is None  # the pipe is gone: through the client ...
        assert not lookup.lookup(txn).degraded  # ... which opens a new pipe
        for _ in range(200):
            if (sent := lookup.send(txn)) is not None:
                break
            await asyncio.sleep(0.005)
        assert not (await answered(lookup, txn, sent)).degraded

    on_loop(body)


def test_idle_connection_dropped_goes_through_the_client(
    customer: Customer, redis_client: redis.Redis
):
    """A pipe whose connection drops while nothing is in flight: the next lookup is not
    degraded (asked through the client), and the pipe comes back."""

    async def body(lookup: FeatureLookup) -> None:
        await piped(lookup, customer)
        txn = record_of(customer)
        broken = lookup._pipe
        host, port = broken.local_address[:2]
        redis_client.client_kill(f"{host}:{port}")
        for _ in range(200):
            if broken.broken:
                break
            await asyncio.sleep(0.005)
        assert broken.broken
        assert lookup.send(txn) is None
        assert not lookup.lookup(txn).degraded
        for _ in range(200):
            if lookup._pipe is not None and lookup._pipe is not broken:
                break
            await asyncio.sleep(0.005)
        sent = lookup.send(txn)
        assert sent is not None and sent.pipe is not broken
        assert not (await answered(lookup, txn, sent)).degraded

    on_loop(body)


def test_paused_redis_costs_one_timeout(customer: Customer, redis_client: redis.Redis):
    """Redis not answering (``CLIENT PAUSE``): the first sent lookup times out, the ones sent
    behind it on the same connection are answered as skipped at the same moment, without a
    timeout of their own (counted: one timeout, two skipped answers)."""

    async def body(lookup: FeatureLookup) -> None:
        await piped(lookup, customer)
        txn = record_of(customer)
        timeouts_before = _sample("fraud_scorer_redis_errors_total", kind="timeout")
        skipped_before = _sample("fraud_scorer_degraded_total", reason="online_store_skipped")
        redis_client.client_pause(300)
        try:
            started = time.perf_counter()
            sent = [lookup.send(txn) for _ in range(3)]
            answers = [await answered(lookup, txn, s) for s in sent]
            waited = time.perf_counter() - started
        finally:
            await asyncio.sleep(0.3)  # the pause ends
        assert all(a.degraded for a in answers)
        assert "Timeout" in answers[0].degraded_reason
        assert waited < 0.25  # one 50 ms timeout, not three, not the pause
        assert _sample("fraud_scorer_redis_errors_total", kind="timeout") == timeouts_before + 1
        assert (
            _sample("fraud_scorer_degraded_total", reason="online_store_skipped")
            == skipped_before + 2
        )

    on_loop(body)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_reply_that_is_not_resp_breaks_the_pipe():
    """A peer answering something that is not RESP (not Redis, a proxy's error page): the
    request waiting fails with ``InvalidResponse``, the one behind it as broken, nothing hangs."""

    async def main() -> None:
        async def not_redis(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            await writer.drain()

        server = await asyncio.start_server(not_redis, "127.0.0.1", 0)
        host, port = server.sockets[0].getsockname()[:2]
        loop = asyncio.get_running_loop()
        pipe = ScriptPipe(loop, timeout_s=1.0, encoding=None)
        await loop.create_connection(lambda: pipe, host, port)
        first, second = pipe.send(b"*1\r\n$4\r\nPING\r\n"), pipe.send(b"*1\r\n$4\r\nPING\r\n")
        with pytest.raises(redis.InvalidResponse):
            await asyncio.wait_for(first, 0.5)
        with pytest.raises(PipeBroken):
            await asyncio.wait_for(second, 0.5)
        assert pipe.broken
        with pytest.raises(PipeBroken):
            pipe.send(b"*1\r\n$4\r\nPING\r\n")
        server.close()
        await server.wait_closed()

    asyncio.run(main())
