"""The entity stores' expiry: an entity's store outlives its newest event by the stream's
retention, whatever order its events were added in."""

from __future__ import annotations

import time
from datetime import timedelta

import redis

from fraud_platform.lib.contracts.events import TRANSACTIONS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.streaming.processor import StreamProcessor
from fraud_platform.lib.streaming.store import store_key
from tests.integration.streaming.events import now_utc, random_events


def test_seeding_older_events_first_keeps_them(redis_client: redis.Redis) -> None:
    """Seeding adds an entity's events a chunk at a time in offset order, so a chunk may hold
    only its older events, whose own expiry (newest + retention + margin) has passed: the store
    must keep them for the later chunk (the lifetime totals of windows count them)."""
    prefix = f"seed-{time.time_ns()}-"
    now = now_utc()
    events = [
        {**event, "channel": "p2p", "counterparty_id": f"{prefix}cp"}
        for topic, event in random_events(
            7, prefix, 40, start=now - timedelta(days=40), span=timedelta(days=39)
        )
        if topic == TRANSACTIONS
    ]
    old = [e for e in events if e["event_time"] < now - timedelta(days=20)]
    new = [e for e in events if e["event_time"] >= now - timedelta(days=20)]
    assert old and new
    processor = StreamProcessor(redis_client, FEATURE_GROUPS, store_prefix=f"test:{prefix}")
    stream = next(s for s in processor.plan if s.entity_name == "counterparty")
    assert stream.retention < timedelta(days=13)  # the old chunk's own expiry has passed
    processor.seed(TRANSACTIONS, old)
    processor.seed(TRANSACTIONS, new)
    key = store_key(f"test:{prefix}", stream.name, f"{prefix}cp")
    assert redis_client.hlen(key) - 1 == len(events)  # less the version field
    assert redis_client.pttl(key) > 0
