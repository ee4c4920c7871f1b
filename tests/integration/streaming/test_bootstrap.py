"""A new stream consumer group starts where bronze stands: the stores seeded from bronze, the
offsets at bronze's recorded positions, and the rows after that exact (real broker, Redis, Delta)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, TRANSACTIONS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.online.history import online_history
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.shared import hosted
from fraud_platform.lib.ingestion.bronze import ingest_backlog
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.streaming.bootstrap import bootstrap_group
from fraud_platform.lib.streaming.health import heartbeat_key
from fraud_platform.lib.streaming.plan import SILVER_TOPICS
from fraud_platform.lib.streaming.processor import StreamProcessor
from fraud_platform.lib.streaming.store import store_key
from fraud_platform.lib.streaming.verify import records_frame
from tests.integration.streaming.conftest import StreamRig
from tests.integration.streaming.events import now_utc, random_events

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("kafka_broker", ["noida"], indirect=True),
]


def _history_in_bronze(stream_rig: StreamRig, history: list, tmp_path: Path) -> DeltaStore:
    """``history`` produced and ingested into bronze (the batch path's part before a bootstrap)."""
    stream_rig.produce(history)
    store = DeltaStore(str(tmp_path / "delta"))
    for contract in (TRANSACTIONS, ACCOUNT_EVENTS):
        ingest_backlog(
            stream_rig.topics[contract],
            bootstrap=stream_rig.bootstrap,
            store=store,
            contract=contract,
        )
    return store


def test_a_new_group_starts_at_bronze_with_seeded_stores_and_exact_rows(
    stream_rig: StreamRig, redis_client: redis.Redis, tmp_path: Path
) -> None:
    events = random_events(
        41,
        stream_rig.prefix,
        1600,
        start=now_utc() - timedelta(minutes=40),
        span=timedelta(minutes=35),
    )
    history, new = events[:1000], events[1000:]
    store = _history_in_bronze(stream_rig, history, tmp_path)
    # the batch path's online snapshot of the history (each entity's latest row)
    for group in (g for g in FEATURE_GROUPS if g.stream and not hosted(g)):
        source = records_frame(stream_rig.sent[SILVER_TOPICS[group.source]])
        write_snapshot(
            redis_client, group, online_history(group, compute_feature_group(group, source))
        )

    processor = StreamProcessor(
        redis_client, FEATURE_GROUPS, store_prefix=f"test:{stream_rig.prefix}"
    )
    group_name = f"{stream_rig.prefix}group"
    result = bootstrap_group(
        processor, store, stream_rig.bootstrap, group_name, topic_names=stream_rig.topics
    )
    assert result.started_from == "bronze"
    history_by_topic = {t: sum(1 for topic, _ in history if topic == t) for t in stream_rig.topics}
    assert {t: sum(p.values()) for t, p in result.offsets.items()} == history_by_topic
    assert result.seeded_events[TRANSACTIONS] > history_by_topic[TRANSACTIONS]  # one per stream

    stream_rig.produce(new)
    stream_rig.start_worker()
    compared, mismatches, details = stream_rig.wait_exact(redis_client, timeout_s=180)
    assert mismatches == 0, details
    assert compared > 1000
    # the worker read only what bronze had not ingested
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the heartbeat follows the write of the last batch
        applied = int(redis_client.hget(heartbeat_key(group_name), "events") or 0)
        if applied >= len(new):
            break
        time.sleep(0.1)
    assert applied == len(new)
    # a group with offsets is resumed, not bootstrapped again
    again = bootstrap_group(
        processor, store, stream_rig.bootstrap, group_name, topic_names=stream_rig.topics
    )
    assert again.started_from == "committed offsets"


def test_seeding_keeps_every_event_of_an_entity_still_within_retention(
    stream_rig: StreamRig, redis_client: redis.Redis, tmp_path: Path
) -> None:
    """An entity whose newest event is within its stream's retention of now is seeded with ALL
    its events, also the older ones (a worker that ran all along holds them: its store expires
    only after the entity's newest event, and lifetime features such as the last password
    change read them); an entity with no event within retention is not seeded at all."""
    real_now = now_utc()
    history = random_events(
        43,
        stream_rig.prefix,
        600,
        start=real_now - timedelta(minutes=40),
        span=timedelta(minutes=35),
    )
    store = _history_in_bronze(stream_rig, history, tmp_path)
    processor = StreamProcessor(
        redis_client, FEATURE_GROUPS, store_prefix=f"test:{stream_rig.prefix}"
    )
    # "now" 30 days on, less 20 minutes: for a 30-day stream, entities seen in the last 20
    # minutes of the history are active, with events older than now - retention among theirs
    now = real_now + timedelta(days=30) - timedelta(minutes=20)
    bootstrap_group(
        processor, store, stream_rig.bootstrap, f"{stream_rig.prefix}g", stream_rig.topics, now=now
    )

    expected: dict[str, int] = {}
    older_seeded = inactive = 0
    for stream in processor.plan:
        by_entity: dict[str, list] = {}
        for topic, event in history:
            values = [event.get(k) for k in stream.join_keys]
            if topic == stream.topic and all(values):
                by_entity.setdefault("|".join(map(str, values)), []).append(event["event_time"])
        for entity, times in by_entity.items():
            if max(times) >= now - stream.retention:
                expected[store_key(f"test:{stream_rig.prefix}", stream.name, entity)] = len(times)
                older_seeded += sum(t < now - stream.retention for t in times)
            else:
                inactive += 1
    stored = {
        key.decode(): redis_client.hlen(key) - 1  # less the version field
        for key in redis_client.scan_iter(match=f"test:{stream_rig.prefix}fps:*", count=1000)
    }
    assert older_seeded > 0 and inactive > 0  # both cases of the rule occur
    assert stored == expected
