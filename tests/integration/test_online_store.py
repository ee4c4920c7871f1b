"""The online store on a real Redis serves exactly what the offline point-in-time join gives."""

import random
import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
from fraud_platform.lib.features.online import OnlineFeatureReader, online_key, write_snapshot
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.request import FRAUD_SCORING_V1

pytestmark = pytest.mark.integration
# recent, so the keys are not already past their TTL on the wall clock that Redis expires by
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
TXN_GROUPS = [g for g in FRAUD_SCORING_V1.groups if g.source == "fct_transactions"]


@pytest.fixture
def client() -> redis.Redis:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=5)
    client.ping()
    return client


def _random_transactions(seed: int, users: list[str], n: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        user = rng.choice(users)
        rows.append(
            {
                "transaction_id": f"t{i}",
                "user_id": user,
                "card_id": f"{user}-c{rng.randint(0, 1)}",
                "device_id": f"{user}-d{rng.randint(0, 2)}",
                "country": rng.choice(["DE", "DE", "FR"]),
                "merchant_id": f"m{rng.randint(0, 9)}",
                "merchant_category": "grocery",
                "channel": rng.choice(["ecommerce", "p2p", "card_present"]),
                "amount": round(rng.uniform(1, 300), 2),
                "event_time": T0 + timedelta(minutes=rng.randint(0, 3 * 24 * 60)),
            }
        )
    return pl.DataFrame(rows, schema_overrides={"event_time": pl.Datetime("us", "UTC")}).sort(
        "event_time"
    )


def _cleanup(client: redis.Redis, users: list[str]) -> None:
    for user in users:
        for key in client.scan_iter(match=f"fp:*:{user}*", count=1000):
            client.delete(key)


def test_online_value_equals_latest_offline_value(client: redis.Redis) -> None:
    users = [f"it-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    events = _random_transactions(1, users, 300)
    now = events["event_time"].max() + timedelta(minutes=1)
    reader = OnlineFeatureReader(client, FRAUD_SCORING_V1)
    try:
        offline = {g.versioned_name: compute_feature_group(g, events) for g in TXN_GROUPS}
        for group in TXN_GROUPS:
            write_snapshot(client, group, latest_per_entity(offline[group.versioned_name]))
        for user in users:
            latest = events.filter(pl.col("user_id") == user).tail(1).row(0, named=True)
            entities = {
                "user_id": user,
                "card_id": latest["card_id"],
                "device_id": latest["device_id"],
                "country": latest["country"],
            }
            online = reader.get_online_features(entities, now=now)
            expected = point_in_time_join(
                pl.DataFrame(
                    [{**entities, "event_time": now}],
                    schema_overrides={"event_time": pl.Datetime("us", "UTC")},
                ),
                TXN_GROUPS,
                offline,
            ).row(0, named=True)
            for group in TXN_GROUPS:
                for name in group.feature_names:
                    assert online.values[name] == expected[name], (user, name)
            assert online.age_seconds["user_txn_velocity_v1"] == pytest.approx(
                (now - events.filter(pl.col("user_id") == user)["event_time"].max()).total_seconds()
            )
    finally:
        _cleanup(client, users)


def test_replay_online_matches_point_in_time_at_random_instants(client: redis.Redis) -> None:
    """Feed events up to t, refresh the online store, read at t: same as the PIT frame at t."""
    users = [f"rp-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    events = _random_transactions(2, users, 200)
    reader = OnlineFeatureReader(client, FRAUD_SCORING_V1)
    rng = random.Random(3)
    offline_full = {g.versioned_name: compute_feature_group(g, events) for g in TXN_GROUPS}
    try:
        for _ in range(8):
            t = T0 + timedelta(minutes=rng.randint(60, 3 * 24 * 60))
            seen = events.filter(pl.col("event_time") < t)
            for group in TXN_GROUPS:
                write_snapshot(client, group, latest_per_entity(compute_feature_group(group, seen)))
            for user in users:
                entities = {
                    "user_id": user,
                    "card_id": f"{user}-c0",
                    "device_id": f"{user}-d0",
                    "country": "DE",
                }
                online = reader.get_online_features(entities, now=t)
                offline = point_in_time_join(
                    pl.DataFrame(
                        [{**entities, "event_time": t}],
                        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
                    ),
                    TXN_GROUPS,
                    offline_full,
                ).row(0, named=True)
                for group in TXN_GROUPS:
                    for name in group.feature_names:
                        assert online.values[name] == offline[name], (t, user, name)
    finally:
        _cleanup(client, users)


def test_expired_rows_are_not_served(client: redis.Redis) -> None:
    users = [f"ttl-{uuid.uuid4().hex[:8]}"]
    events = _random_transactions(4, users, 5)
    group = next(g for g in TXN_GROUPS if g.name == "card_velocity")
    try:
        latest = latest_per_entity(compute_feature_group(group, events))
        write_snapshot(client, group, latest)
        card = latest["card_id"][0]
        assert client.exists(online_key(group, card))
        later = latest["feature_time"][0] + group.ttl + timedelta(seconds=1)
        online = OnlineFeatureReader(client, FRAUD_SCORING_V1).get_online_features(
            {"user_id": users[0], "card_id": card, "device_id": "x", "country": "DE"}, now=later
        )
        assert online.feature_times["card_velocity_v1"] is None
        assert online.values["card_txn_count_24h"] is None
    finally:
        _cleanup(client, users)
