"""The online store on a real 3-node Redis Cluster: the same point-in-time answers as on one
server (the replay consistency checks of ``features/test_online_store.py`` run against it), the
stream worker writing through it, and the scoring lookup reading from it."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
import redis
from redis.cluster import RedisCluster

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
from fraud_platform.lib.features.online.client import redis_client
from fraud_platform.lib.features.online.history import online_history
from fraud_platform.lib.features.online.layout import online_key
from fraud_platform.lib.features.online.scripts import slot_of
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.shared import hosts_of
from fraud_platform.lib.serving.lookup import FeatureLookup
from fraud_platform.tools.brokers import BrokerSpec
from tests.integration.features import test_online_store as single_server
from tests.integration.streaming.conftest import StreamRig
from tests.integration.streaming.events import now_utc, random_events

pytestmark = pytest.mark.integration
TXN_GROUPS = single_server.TXN_GROUPS


def _node_of(client: redis.Redis, key: str) -> str:
    node = client.get_node_from_key(key)  # type: ignore[attr-defined]
    return f"{node.host}:{node.port}"


def test_the_url_scheme_selects_a_cluster_client(redis_cluster_url: str) -> None:
    client = redis_client(redis_cluster_url, socket_timeout=5)
    assert isinstance(client, RedisCluster)
    assert len(client.get_primaries()) == 3
    assert not isinstance(redis_client("redis://127.0.0.1:6379/0"), RedisCluster)
    with pytest.raises(ValueError, match="only database 0"):
        redis_client(redis_cluster_url + "/2")


def test_an_entitys_keys_share_a_slot_and_entities_spread_over_the_nodes(
    cluster_client: redis.Redis,
) -> None:
    user_groups = [g for g in FEATURE_GROUPS if g.entity.join_keys == ("user_id",)]
    assert len(user_groups) >= 2
    users = [f"slot-{i}" for i in range(60)]
    for user in users:
        assert len({slot_of(online_key(g, user)) for g in user_groups}) == 1
    nodes = {_node_of(cluster_client, online_key(user_groups[0], user)) for user in users}
    assert len(nodes) == 3


def test_replay_online_matches_point_in_time_on_the_cluster(cluster_client: redis.Redis) -> None:
    compared = single_server.check_replay_at_random_instants(cluster_client)
    assert compared == 8 * 4 * single_server.FEATURES_PER_READ


def test_online_value_equals_latest_offline_value_on_the_cluster(
    cluster_client: redis.Redis,
) -> None:
    compared = single_server.check_online_equals_latest_offline(cluster_client)
    assert compared == 5 * single_server.FEATURES_PER_READ


def test_a_snapshot_writes_every_entity_across_all_nodes(cluster_client: redis.Redis) -> None:
    """Many entities in one snapshot (script calls per slot, pipelined per node): every row lands
    and the keys sit on all three primaries."""
    users = [f"many-{uuid.uuid4().hex[:8]}-{i}" for i in range(400)]
    events = single_server._random_transactions(7, users, 3000)
    group = next(g for g in hosts_of(TXN_GROUPS) if g.entity.join_keys == ("user_id",))
    latest = latest_per_entity(compute_feature_group(group, events))
    try:
        assert write_snapshot(cluster_client, group, latest) == latest.height
        assert latest.height == len(set(events["user_id"]))
        keys = [online_key(group, user) for user in latest["entity_key"]]
        assert sum(cluster_client.exists(key) for key in keys) == len(keys)
        assert len({_node_of(cluster_client, key) for key in keys}) == 3
        # writing the same snapshot again stores the same rows (batch version 0 ties win)
        assert write_snapshot(cluster_client, group, latest) == latest.height
    finally:
        single_server._cleanup(cluster_client, users)


def test_the_scoring_lookup_reads_point_in_time_rows_from_the_cluster(
    cluster_client: redis.Redis,
) -> None:
    users = [f"lk-{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
    events = single_server._random_transactions(5, users, 300)
    offline = {g.versioned_name: compute_feature_group(g, events) for g in TXN_GROUPS}
    lookup = FeatureLookup(cluster_client, FRAUD_SCORING_V1)
    try:
        for group in hosts_of(TXN_GROUPS):  # version 1 is read from version 2's rows
            write_snapshot(
                cluster_client, group, online_history(group, compute_feature_group(group, events))
            )
        now = events["event_time"].max() + timedelta(minutes=1)
        checked = 0
        for txn in events.group_by("user_id").agg(pl.all().last()).iter_rows(named=True):
            request = {**txn, "event_time": now}
            result = lookup.lookup(request)
            assert result.degraded_reason is None or "no online features" in result.degraded_reason
            expected = point_in_time_join(
                pl.DataFrame(
                    [{k: request[k] for k in (*_JOIN_KEYS, "event_time")}],
                    schema_overrides={
                        "event_time": pl.Datetime("us", "UTC"),
                        "counterparty_id": pl.String,
                    },
                ),
                TXN_GROUPS,
                offline,
            ).row(0, named=True)
            for group in TXN_GROUPS:
                for name in group.feature_names:
                    assert result.values[name] == expected[name], (txn["user_id"], name)
                    checked += 1
        assert checked > 50
    finally:
        single_server._cleanup(cluster_client, users)


_JOIN_KEYS = ("user_id", "card_id", "device_id", "country", "merchant_id", "counterparty_id")


@pytest.mark.parametrize("kafka_broker", ["noida"], indirect=True)
def test_the_stream_worker_writes_exact_rows_through_the_cluster(
    kafka_broker: BrokerSpec,
    redis_cluster_url: str,
    cluster_client: redis.Redis,
    tmp_path: Path,
) -> None:
    from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, TRANSACTIONS
    from fraud_platform.lib.kafka.admin import ensure_topics

    prefix = f"cl{uuid.uuid4().hex[:8]}-"
    topics = {TRANSACTIONS: f"{prefix}transactions", ACCOUNT_EVENTS: f"{prefix}account_events"}
    ensure_topics(kafka_broker.bootstrap, {n: 3 for n in topics.values()}, retention_ms=3_600_000)
    rig = StreamRig(kafka_broker.bootstrap, prefix, tmp_path, topics, redis_url=redis_cluster_url)
    events = random_events(
        41, prefix, 800, start=now_utc() - timedelta(minutes=20), span=timedelta(minutes=15)
    )
    try:
        rig.produce(events)
        rig.start_worker()
        rows, mismatches, details = rig.wait_exact(cluster_client)
        assert mismatches == 0, details[:5]
        assert rows > 0
        stream_keys = list(cluster_client.scan_iter(match=f"*{prefix}*", count=5000))
        assert len({_node_of(cluster_client, key) for key in stream_keys}) == 3
    finally:
        for worker in rig.workers:
            worker.terminate()
            worker.wait(15)
        for key in cluster_client.scan_iter(match=f"*{prefix}*", count=5000):
            cluster_client.delete(key)
