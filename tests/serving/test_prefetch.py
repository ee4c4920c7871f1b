"""Feature lookups sent ahead (``FeatureLookup.send``, ``prefetch.ScriptPipe``) against the real
Redis: the same answers as a lookup through the client, in step when replies go unread, after
the script cache is flushed and when Redis drops the connection."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis
from prometheus_client import REGISTRY

from fraud_platform.lib.contracts.events import TRANSACTIONS, validate_record
from fraud_platform.lib.serving.lookup import FeatureLookup, online_store_client

from .conftest import REDIS_URL, Customer

pytestmark = pytest.mark.serving


def record_of(customer: Customer, **overrides) -> dict:
    body = customer.transaction(**overrides)
    return validate_record(
        TRANSACTIONS, {"schema_version": 1, **body, "event_time": datetime.now(UTC).isoformat()}
    )


@pytest.fixture
def lookup() -> FeatureLookup:
    found = FeatureLookup(online_store_client(REDIS_URL), retry_after_s=0.3)
    yield found
    found.close()


def piped(lookup: FeatureLookup, customer: Customer) -> None:
    """Make ``lookup`` open its pipe: a send is wanted, then a lookup through the client."""
    assert lookup.send(record_of(customer)) is None  # no pipe yet
    assert not lookup.lookup(record_of(customer)).degraded
    assert lookup._pipe is not None


def test_sent_lookup_answers_as_the_client_does(lookup: FeatureLookup, customer: Customer):
    piped(lookup, customer)
    for overrides in ({}, {"device_id": "d-never-seen"}, {"amount": 9.5}):
        txn = record_of(customer, **overrides)
        sent = lookup.send(txn)
        assert sent is not None
        assert lookup.lookup(txn, sent=sent) == lookup.lookup(txn)


def test_unread_replies_are_dropped_in_order(lookup: FeatureLookup, customer: Customer):
    piped(lookup, customer)
    known, unknown = record_of(customer), record_of(customer, device_id="d-never-seen")
    lookup.send(known)  # never read (a request cancelled before the handler took it up)
    lookup.send(known)
    sent = lookup.send(unknown)
    found = lookup.lookup(unknown, sent=sent)
    assert found == lookup.lookup(unknown)
    assert found.age_seconds["user_device_history_v1"] is None  # its own reply, not the first
    again = lookup.send(known)
    assert lookup.lookup(known, sent=again) == lookup.lookup(known)


def test_flushed_script_is_loaded_again(
    lookup: FeatureLookup, customer: Customer, redis_client: redis.Redis
):
    piped(lookup, customer)
    txn = record_of(customer)
    expected = lookup.lookup(txn)
    redis_client.script_flush()
    first, second = lookup.send(txn), lookup.send(txn)
    assert lookup.lookup(txn, sent=first) == expected  # NOSCRIPT: asked through the client
    assert lookup.lookup(txn, sent=second) == expected  # the pipe is still in step


def test_dropped_connection_degrades_then_recovers(
    lookup: FeatureLookup, customer: Customer, redis_client: redis.Redis
):
    piped(lookup, customer)
    txn = record_of(customer)
    host, port = lookup._pipe._sock.getsockname()[:2]
    redis_client.client_kill(f"{host}:{port}")
    first, second = lookup.send(txn), lookup.send(txn)
    failed = lookup.lookup(txn, sent=first)
    assert failed.degraded and "online store unavailable" in failed.degraded_reason
    # sent on the same connection: not tried again, as any lookup within retry_after_s
    skipped = lookup.lookup(txn, sent=second)
    assert skipped.degraded and skipped.values == {}
    assert lookup.send(txn) is None  # nothing sent while Redis is being skipped
    time.sleep(0.35)
    assert not lookup.lookup(txn).degraded  # through the client, then a new pipe
    sent = lookup.send(txn)
    assert sent is not None and not lookup.lookup(txn, sent=sent).degraded


def test_paused_redis_costs_one_timeout(
    lookup: FeatureLookup, customer: Customer, redis_client: redis.Redis
):
    """Redis not answering (``CLIENT PAUSE``): the first sent lookup times out, the ones sent
    behind it on the same connection are answered as skipped, without waiting for a timeout
    of their own (counted: one timeout, two skipped answers)."""
    piped(lookup, customer)
    txn = record_of(customer)
    timeouts_before = _sample("fraud_scorer_redis_errors_total", kind="timeout")
    skipped_before = _sample("fraud_scorer_degraded_total", reason="online_store_skipped")
    redis_client.client_pause(300)
    try:
        sent = [lookup.send(txn) for _ in range(3)]
        answers = [lookup.lookup(txn, sent=s) for s in sent]
    finally:
        time.sleep(0.3)  # the pause ends
    assert all(s is not None for s in sent)
    assert all(a.degraded for a in answers)
    assert "Timeout" in answers[0].degraded_reason
    assert _sample("fraud_scorer_redis_errors_total", kind="timeout") == timeouts_before + 1
    assert (
        _sample("fraud_scorer_degraded_total", reason="online_store_skipped") == skipped_before + 2
    )


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
