"""The stream worker (Quix Streams) on the real broker and Redis: every online row equals the
batch computation over the same events, through kill -9, two workers and late events.

Kills: ``STREAM_TEST_KILLS`` (default 10), each at a random point after the worker's first
applied batch while events keep flowing.
"""

from __future__ import annotations

import os
import random
import threading
import time
from datetime import timedelta

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.online.reader import OnlineFeatureReader
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.streaming.health import consumer_lag, last_batch_age_s
from fraud_platform.lib.streaming.plan import SILVER_TOPICS
from fraud_platform.lib.streaming.verify import records_frame
from tests.integration.streaming.conftest import StreamRig, kill9
from tests.integration.streaming.events import now_utc, random_events

pytestmark = pytest.mark.integration
NOIDA = pytest.mark.parametrize("kafka_broker", ["noida"], indirect=True)
# noida 0.2.3 never expires a group member killed while it leads the group: the other workers
# wait for the dead leader's SyncGroup for good (seen in 3 of 3 kill -9 runs, and in a
# two-worker run whose killed worker led the group). A Kafka broker expires it after
# session.timeout.ms, and so does tansu, so the tests that kill workers run there.
TANSU = pytest.mark.parametrize("kafka_broker", ["tansu"], indirect=True)
STREAM_GROUPS = tuple(g for g in FEATURE_GROUPS if g.stream)
KILLS = int(os.environ.get("STREAM_TEST_KILLS", "10"))


def _late(events: list, fraction: float, seed: int) -> list:
    """The same events with ``fraction`` of them produced after later ones (late, out of
    order): each moved 50-400 places further down the stream."""
    rng = random.Random(seed)
    out = list(events)
    for _ in range(int(len(out) * fraction)):
        i = rng.randrange(len(out) - 1)
        item = out.pop(i)
        out.insert(min(len(out), i + rng.randint(50, 400)), item)
    return out


@TANSU
def test_kill_9_at_random_points_leaves_every_row_exact(
    stream_rig: StreamRig, redis_client: redis.Redis
) -> None:
    events = _late(
        random_events(
            11,
            stream_rig.prefix,
            20_000,
            start=now_utc() - timedelta(minutes=50),
            span=timedelta(minutes=45),
        ),
        0.05,
        seed=12,
    )
    stream_rig.produce(events[:1000])
    rng = random.Random(13)
    killing = threading.Event()
    killing.set()

    def feed() -> None:  # events keep flowing (~100/s) until the last kill
        for i in range(1000, len(events), 50):
            if not killing.is_set():
                return
            stream_rig.produce(events[i : i + 50])
            time.sleep(0.5)

    feeder = threading.Thread(target=feed)
    feeder.start()
    kills = 0
    try:
        while kills < KILLS:
            started_ms = int(time.time() * 1000)
            worker = stream_rig.start_worker()
            # killed mid-processing, at a random point after its first applied batch
            applying = stream_rig.wait_applying(redis_client, started_ms)
            assert applying, "worker never applied a batch"
            time.sleep(rng.uniform(0.0, 1.5))
            kill9(worker)
            kills += 1
    finally:
        killing.clear()
    feeder.join()
    stream_rig.start_worker()
    compared, mismatches, details = stream_rig.wait_exact(redis_client)
    assert kills == KILLS
    assert compared > 2000
    assert mismatches == 0, details


@TANSU
def test_two_workers_one_killed_survivor_takes_over_and_values_stay_exact(
    stream_rig: StreamRig, redis_client: redis.Redis
) -> None:
    events = random_events(
        21,
        stream_rig.prefix,
        3000,
        start=now_utc() - timedelta(minutes=40),
        span=timedelta(minutes=35),
        users=30,
    )
    first, survivor = stream_rig.start_worker(), stream_rig.start_worker()
    for i in range(0, 1500, 250):
        stream_rig.produce(events[i : i + 250])
        time.sleep(0.5)
    kill9(first)
    stream_rig.produce(events[1500:])
    compared, mismatches, details = stream_rig.wait_exact(redis_client)
    assert survivor.poll() is None
    assert compared > 3000
    assert mismatches == 0, details
    # a recent batch (what online/feature_stream observes). Consumer lag is not checked here:
    # tansu's high watermarks are wrong and its committed offsets lag the transactions Quix
    # committed (630/2370 events produced, 141/530 reported committed, every row exact); the
    # lag observation is tested on noida (the point-in-time lookup test below)
    group = f"{stream_rig.prefix}group"
    age = last_batch_age_s(redis_client, group)
    assert age is not None and age < 120
    log = (stream_rig.folder / "worker1.log").read_text()
    assert "Traceback" not in log


@NOIDA
def test_lookups_at_event_times_see_exactly_the_point_in_time_rows(
    stream_rig: StreamRig, redis_client: redis.Redis
) -> None:
    """After the stream applied every event (and later ones), a lookup at any instant (exactly
    at event times too) returns the point-in-time row: never its own event or a later one."""
    events = _late(
        random_events(
            31,
            stream_rig.prefix,
            1500,
            start=now_utc() - timedelta(minutes=30),
            span=timedelta(minutes=25),
            users=10,
        ),
        0.05,
        seed=32,
    )
    stream_rig.produce(events)
    stream_rig.start_worker()
    assert stream_rig.wait_exact(redis_client)[1] == 0
    # what online/feature_stream observes: nothing left to consume
    group, topics = f"{stream_rig.prefix}group", sorted(stream_rig.topics.values())
    deadline = time.monotonic() + 30
    while sum(t.lag for t in consumer_lag(stream_rig.bootstrap, group, topics)) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.5)
    lags = consumer_lag(stream_rig.bootstrap, group, topics)
    assert [t.lag for t in lags] == [0, 0]
    assert sum(t.end_offset for t in lags) == len(events)
    reference = {
        g.versioned_name: compute_feature_group(
            g, records_frame(stream_rig.sent[SILVER_TOPICS[g.source]])
        )
        for g in STREAM_GROUPS
    }
    rng = random.Random(33)
    txns = [e for topic, e in events if topic == "transactions"]
    instants = [(e, e["event_time"]) for e in rng.sample(txns, 30)]  # exactly at events
    instants += [
        (e, e["event_time"] + timedelta(seconds=rng.uniform(-120, 120)))
        for e in rng.sample(txns, 15)
    ]
    # a service pins one version per group: the newest versions in one, the older ones in another
    newest = {
        g.name: max(x.version for x in STREAM_GROUPS if x.name == g.name) for g in STREAM_GROUPS
    }
    services = [
        FeatureService(
            "stream_newest",
            tuple(g for g in STREAM_GROUPS if g.version == newest[g.name]),
            (),
            (),
        ),
        FeatureService(
            "stream_older",
            tuple(g for g in STREAM_GROUPS if g.version != newest[g.name]),
            (),
            (),
        ),
    ]
    checked = 0
    for service in services:
        reader = OnlineFeatureReader(redis_client, service)
        for event, at in instants:
            entities = {
                k: event.get(k)
                for k in (
                    "user_id",
                    "card_id",
                    "device_id",
                    "country",
                    "merchant_id",
                    "counterparty_id",
                )
            }
            online = reader.get_online_features(entities, now=at)
            expected = point_in_time_join(
                pl.DataFrame(
                    [{**entities, "event_time": at}],
                    schema_overrides={
                        "event_time": pl.Datetime("us", "UTC"),
                        "counterparty_id": pl.String,
                    },
                ),
                service.groups,
                reference,
            ).row(0, named=True)
            for group in service.groups:
                for name in group.feature_names:
                    assert online.values[name] == expected[name], (at, group.versioned_name, name)
                    checked += 1
    assert checked > 45 * 50
