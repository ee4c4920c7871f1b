"""The online store on a real Redis serves exactly what the offline point-in-time join gives."""

import json
import math
import random
import struct
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
from fraud_platform.lib.features.online.layout import (
    EXPIRY_MARGIN_MS,
    ONLINE_LAYOUT_VERSION,
    online_key,
    to_micros,
)
from fraud_platform.lib.features.online.reader import OnlineFeatureReader, OnlineFeatures
from fraud_platform.lib.features.online.snapshot import snapshot_rows
from fraud_platform.lib.features.online.writer import write_rows, write_snapshot
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import Entity, Feature, FeatureGroup, FeatureService
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.shared import hosts_of
from tests.redis_server import redis_db_url

pytestmark = pytest.mark.integration
# recent, so the keys are not already past their TTL on the wall clock that Redis expires by
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
TXN_GROUPS = [g for g in FRAUD_SCORING_V1.groups if g.source == "fct_transactions"]


@pytest.fixture
def client() -> redis.Redis:
    client = redis.Redis.from_url(redis_db_url(0), socket_timeout=5)
    client.ping()
    return client


def _random_transactions(seed: int, users: list[str], n: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        user = rng.choice(users)
        channel = rng.choice(["ecommerce", "p2p", "card_present"])
        rows.append(
            {
                "transaction_id": f"t{i}",
                "user_id": user,
                "card_id": f"{user}-c{rng.randint(0, 1)}",
                "device_id": f"{user}-d{rng.randint(0, 2)}",
                "country": rng.choice(["DE", "DE", "FR"]),
                "merchant_id": f"{users[0]}-m{rng.randint(0, 9)}",  # found by the cleanup
                "merchant_category": "grocery",
                "channel": channel,
                # a p2p transfer's receiver; named after the user so the cleanup finds its keys
                "counterparty_id": f"{user}-p{rng.randint(0, 1)}" if channel == "p2p" else None,
                "amount": round(rng.uniform(1, 300), 2),
                "event_time": T0 + timedelta(minutes=rng.randint(0, 3 * 24 * 60)),
            }
        )
    return pl.DataFrame(
        rows,
        schema_overrides={"event_time": pl.Datetime("us", "UTC"), "counterparty_id": pl.String},
    ).sort("event_time")


def _cleanup(client: redis.Redis, users: list[str]) -> None:
    for user in users:
        for key in client.scan_iter(match=f"fp:*:{user}*", count=1000):
            client.delete(key)


def _assert_online_equals_point_in_time(
    reader: OnlineFeatureReader,
    entities: dict[str, str],
    at: datetime,
    offline: dict[str, pl.DataFrame],
    context: tuple[Any, ...],
) -> OnlineFeatures:
    """Read online at ``at``; every feature equals the point-in-time join of ``offline`` there."""
    online = reader.get_online_features(entities, now=at)
    expected = point_in_time_join(
        pl.DataFrame(
            [{**entities, "event_time": at}],
            schema_overrides={"event_time": pl.Datetime("us", "UTC")},
        ),
        TXN_GROUPS,
        offline,
    ).row(0, named=True)
    for group in TXN_GROUPS:
        for name in group.feature_names:
            assert online.values[name] == expected[name], (*context, name)
    return online


FEATURES_PER_READ = sum(len(g.feature_names) for g in TXN_GROUPS)


def check_online_equals_latest_offline(client: redis.Redis) -> int:
    """Every feature read online after a snapshot equals the offline point-in-time value (asserted
    value by value); returns how many values were compared. Shared with the cluster tests."""
    users = [f"it-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    events = _random_transactions(1, users, 300)
    now = events["event_time"].max() + timedelta(minutes=1)
    reader = OnlineFeatureReader(client, FRAUD_SCORING_V1)
    compared = 0
    try:
        offline = {g.versioned_name: compute_feature_group(g, events) for g in TXN_GROUPS}
        # version 1 of a group is read from version 2's rows (``shared.storage_host``)
        for group in hosts_of(TXN_GROUPS):
            write_snapshot(
                client, group, snapshot_rows(group, compute_feature_group(group, events))
            )
        for user in users:
            latest = events.filter(pl.col("user_id") == user).tail(1).row(0, named=True)
            entities = {
                "user_id": user,
                "card_id": latest["card_id"],
                "device_id": latest["device_id"],
                "country": latest["country"],
                "merchant_id": latest["merchant_id"],
                "counterparty_id": latest["counterparty_id"],
            }
            online = _assert_online_equals_point_in_time(reader, entities, now, offline, (user,))
            assert online.age_seconds["user_txn_velocity_v1"] == pytest.approx(
                (now - events.filter(pl.col("user_id") == user)["event_time"].max()).total_seconds()
            )
            compared += FEATURES_PER_READ
    finally:
        _cleanup(client, users)
    return compared


def test_online_value_equals_latest_offline_value(client: redis.Redis) -> None:
    assert check_online_equals_latest_offline(client) == 5 * FEATURES_PER_READ


def check_replay_at_random_instants(client: redis.Redis) -> int:
    """Feed events up to t, refresh the online store, read at t: same as the PIT frame at t
    (asserted value by value); returns how many values were compared. Shared with the cluster
    tests."""
    users = [f"rp-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    events = _random_transactions(2, users, 200)
    reader = OnlineFeatureReader(client, FRAUD_SCORING_V1)
    rng = random.Random(3)
    offline_full = {g.versioned_name: compute_feature_group(g, events) for g in TXN_GROUPS}
    compared = 0
    try:
        for _ in range(8):
            t = T0 + timedelta(minutes=rng.randint(60, 3 * 24 * 60))
            seen = events.filter(pl.col("event_time") < t)
            # the store as the batch path leaves it at t (the instants are in random order: rows
            # of a later instant would be history more than HISTORY_HORIZON ahead of t)
            _cleanup(client, users)
            for group in hosts_of(TXN_GROUPS):
                write_snapshot(
                    client, group, snapshot_rows(group, compute_feature_group(group, seen))
                )
            for user in users:
                entities = {
                    "user_id": user,
                    "card_id": f"{user}-c0",
                    "device_id": f"{user}-d0",
                    "country": "DE",
                    "merchant_id": f"{users[0]}-m0",
                    "counterparty_id": f"{user}-p0",
                }
                _assert_online_equals_point_in_time(reader, entities, t, offline_full, (t, user))
                compared += FEATURES_PER_READ
    finally:
        _cleanup(client, users)
    return compared


def test_replay_online_matches_point_in_time_at_random_instants(client: redis.Redis) -> None:
    assert check_replay_at_random_instants(client) == 8 * 4 * FEATURES_PER_READ


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


# --- layout 2: one JSON string per key, written with one SET ... PXAT per row ----------------

THING = Entity("thing", ("thing_id",), "A test entity.")
ROUND_TRIP = FeatureGroup(
    name="online_round_trip_test",
    version=1,
    entity=THING,
    source="none",
    event_time_column="event_time",
    features=(
        Feature("rt_float", "last", "a"),
        Feature("rt_int", "count", dtype="int"),
        Feature("rt_ts", "last", "b", dtype="ts"),
        Feature("rt_str", "last", "c", dtype="str"),
    ),
    ttl=timedelta(days=30),
    owner="tests",
    description="Every dtype, for the online store's round trip.",
)
ROUND_TRIP_SERVICE = FeatureService("online_round_trip_test", (ROUND_TRIP,), (), ())
OWN_DB = redis_db_url(12)  # this module's tests below flush it


@pytest.fixture
def own_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(OWN_DB, socket_timeout=5)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def _adversarial_doubles(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    special = [1e-300, 1e300, 0.1 + 0.2, -0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308]
    special += [1.7976931348623157e308, -1.7976931348623157e308, 1e16, 1e15, 1e23, 2.0**53 + 2]
    special += [float("inf"), float("-inf"), 1 / 3, -123.456, 40.0]
    randoms = []
    while len(randoms) < n:  # uniformly random bit patterns: every exponent, subnormals too
        value = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(value):
            randoms.append(value)
    return special + randoms


def _frame(ids: list[str], times: list[datetime], **features: list[Any]) -> pl.DataFrame:
    ts = pl.Datetime("us", "UTC")
    columns = {
        "entity_key": pl.Series(ids, dtype=pl.String),
        "thing_id": pl.Series(ids, dtype=pl.String),
        "feature_time": pl.Series(times, dtype=ts),
        "rt_float": pl.Series([None] * len(ids), dtype=pl.Float64),
        "rt_int": pl.Series([None] * len(ids), dtype=pl.Int64),
        "rt_ts": pl.Series([None] * len(ids), dtype=ts),
        "rt_str": pl.Series([None] * len(ids), dtype=pl.String),
    }
    for name, values in features.items():
        columns[name] = pl.Series(values, dtype=columns[name].dtype)
    return pl.DataFrame(columns)


def test_floats_round_trip_bit_exact(own_db: redis.Redis) -> None:
    floats = _adversarial_doubles(3_000, seed=7)
    n = len(floats)
    ids = [f"thing-{i}-ü" for i in range(n)]  # a non-ASCII key: RESP lengths are in bytes
    ft = datetime.now(UTC).replace(microsecond=123_456) - timedelta(hours=1)
    rng = random.Random(8)
    ints = [rng.randint(-(2**63), 2**63 - 1) for _ in range(n)]
    stamps = [ft - timedelta(microseconds=rng.randint(0, 10**13)) for _ in range(n)]
    texts = [f'q"uote\\ {i}\n\t,é€😀]' for i in range(n)]
    frame = _frame(ids, [ft] * n, rt_float=floats, rt_int=ints, rt_ts=stamps, rt_str=texts)
    assert write_snapshot(own_db, ROUND_TRIP, frame, batch_size=1_000) == n
    assert own_db.dbsize() == n
    reader = OnlineFeatureReader(own_db, ROUND_TRIP_SERVICE)
    got = reader.get_online_features_many([{"thing_id": i} for i in ids], now=ft + timedelta(1))
    for i, features in enumerate(got):
        value = features.values["rt_float"]
        assert type(value) is float
        assert struct.pack("<d", value) == struct.pack("<d", floats[i]), (i, floats[i], value)
        assert features.values["rt_int"] == ints[i] and type(features.values["rt_int"]) is int
        assert features.values["rt_ts"] == stamps[i] and features.values["rt_ts"].tzinfo == UTC
        assert features.values["rt_str"] == texts[i]
        assert features.feature_times[ROUND_TRIP.versioned_name] == ft
    nan = _frame(["nan"], [ft], rt_float=[float("nan")])
    write_snapshot(own_db, ROUND_TRIP, nan)
    assert math.isnan(
        reader.get_online_features({"thing_id": "nan"}, now=ft + timedelta(1)).values["rt_float"]
    )


def test_null_features_and_a_feature_turned_null_leaves_no_stale_value(
    own_db: redis.Redis,
) -> None:
    ft = datetime.now(UTC) - timedelta(hours=2)
    reader = OnlineFeatureReader(own_db, ROUND_TRIP_SERVICE)
    write_snapshot(own_db, ROUND_TRIP, _frame(["a", "b"], [ft, ft]))  # every feature null
    for thing in ("a", "b"):
        online = reader.get_online_features({"thing_id": thing}, now=ft + timedelta(hours=1))
        assert online.feature_times[ROUND_TRIP.versioned_name] == ft
        assert online.missing_groups == []
        assert online.values == dict.fromkeys(ROUND_TRIP.feature_names)

    full = _frame(["a"], [ft], rt_float=[1.5], rt_int=[3], rt_ts=[ft], rt_str=["x"])
    write_snapshot(own_db, ROUND_TRIP, full)
    now = ft + timedelta(hours=1)
    assert reader.get_online_features({"thing_id": "a"}, now=now).values == {
        "rt_float": 1.5,
        "rt_int": 3,
        "rt_ts": ft,
        "rt_str": "x",
    }
    later = ft + timedelta(minutes=5)
    write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [later], rt_int=[4]))  # the rest is null now
    online = reader.get_online_features({"thing_id": "a"}, now=now)
    assert online.values == {"rt_float": None, "rt_int": 4, "rt_ts": None, "rt_str": None}
    assert online.feature_times[ROUND_TRIP.versioned_name] == later
    assert own_db.dbsize() == 2


def _hour_end(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def test_keys_expire_at_the_end_of_the_feature_times_hour_plus_ttl(own_db: redis.Redis) -> None:
    grace = timedelta(milliseconds=EXPIRY_MARGIN_MS)
    ft = datetime.now(UTC) - ROUND_TRIP.ttl - grace + timedelta(hours=1)  # 1-2 h left
    write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [ft], rt_int=[1]))
    key = online_key(ROUND_TRIP, "a")
    assert key.startswith(f"fp:{ONLINE_LAYOUT_VERSION}:online_round_trip_test:v1:")
    expires_at_ms = to_micros(_hour_end(ft) + ROUND_TRIP.ttl + grace) // 1000
    assert own_db.execute_command("PEXPIRETIME", key) == expires_at_ms
    assert [json.loads(m) for m in own_db.zrange(key, 0, -1)] == [
        [to_micros(ft), None, 1, None, None, 0]
    ]

    # already past its TTL: Redis drops it at once (PEXPIREAT in the past)
    write_snapshot(own_db, ROUND_TRIP, _frame(["old"], [ft - timedelta(hours=3)], rt_int=[1]))
    assert not own_db.exists(online_key(ROUND_TRIP, "old"))


def test_the_expiry_moves_only_when_the_newest_row_enters_a_new_hour(own_db: redis.Redis) -> None:
    keep = ROUND_TRIP.ttl + timedelta(milliseconds=EXPIRY_MARGIN_MS)
    hour = _hour_end(datetime.now(UTC)) - timedelta(hours=5)
    key = online_key(ROUND_TRIP, "a")
    write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [hour + timedelta(minutes=10)], rt_int=[1]))
    first = to_micros(hour + timedelta(hours=1) + keep) // 1000
    assert own_db.execute_command("PEXPIRETIME", key) == first
    # as a key written before expiries were rounded: its expiry is what a newer row of the same
    # hour leaves alone, and what a row of the next hour raises
    own_db.pexpireat(key, first - 600_000)
    write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [hour + timedelta(minutes=50)], rt_int=[2]))
    assert own_db.execute_command("PEXPIRETIME", key) == first - 600_000
    write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [hour + timedelta(minutes=70)], rt_int=[3]))
    assert own_db.execute_command("PEXPIRETIME", key) == first + 3_600_000
    # an older row never lowers it
    write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [hour - timedelta(minutes=30)], rt_int=[0]))
    assert own_db.execute_command("PEXPIRETIME", key) == first + 3_600_000
    assert own_db.zcard(key) == 4


def test_null_keys_are_refused_before_anything_is_written(own_db: redis.Redis) -> None:
    ft = datetime.now(UTC) - timedelta(hours=1)
    with pytest.raises(ValueError, match="without entity_key"):
        write_snapshot(own_db, ROUND_TRIP, _frame(["ok", None], [ft, ft]))  # type: ignore[list-item]
    assert own_db.dbsize() == 0


def test_compare_on_write_never_replaces_newer_knowledge(own_db: redis.Redis) -> None:
    """Rows live at their own feature_time; at the same feature_time the higher writer_version
    wins whatever the order of the writes; the batch snapshot (version 0) never replaces a
    stream row (version >= 1)."""
    ft = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    later = ft + timedelta(seconds=30)
    reader = OnlineFeatureReader(own_db, ROUND_TRIP_SERVICE)
    a = {"thing_id": "a"}

    def served(at: datetime) -> object:
        return reader.get_online_features(a, now=at).values["rt_int"]

    assert write_rows(own_db, ROUND_TRIP, _frame(["a"], [later], rt_int=[2]), version=7) == 1
    # an older row written afterwards: stored beside it, never served after `later`
    assert write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [ft], rt_int=[1])) == 1
    assert served(later + timedelta(seconds=1)) == 2
    assert served(later) == 1  # strictly before `later`: the older row
    assert served(ft) is None
    # same feature_time: a lower version loses, an equal or higher one replaces
    assert write_rows(own_db, ROUND_TRIP, _frame(["a"], [later], rt_int=[3]), version=6) == 0
    assert write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [later], rt_int=[4])) == 0
    assert served(later + timedelta(seconds=1)) == 2
    assert write_rows(own_db, ROUND_TRIP, _frame(["a"], [later], rt_int=[5]), version=7) == 1
    assert served(later + timedelta(seconds=1)) == 5
    # a batch row replaces a batch row of the same feature_time (the repair path)
    assert write_snapshot(own_db, ROUND_TRIP, _frame(["a"], [ft], rt_int=[6])) == 1
    assert served(later) == 6
    assert own_db.zcard(online_key(ROUND_TRIP, "a")) == 2


def test_history_keeps_rows_within_the_horizon_and_a_minimum(own_db: redis.Redis) -> None:
    from fraud_platform.lib.features.online.layout import HISTORY_HORIZON, HISTORY_MIN_ROWS

    newest = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    old = [newest - HISTORY_HORIZON - timedelta(minutes=i + 1) for i in range(HISTORY_MIN_ROWS + 3)]
    recent = [newest - timedelta(minutes=i) for i in range(3)]  # within the horizon
    for i, ft in enumerate(sorted(old + recent)):
        write_rows(own_db, ROUND_TRIP, _frame(["h"], [ft], rt_int=[i]), version=1)
    stored = [
        int(score)
        for _, score in own_db.zrange(online_key(ROUND_TRIP, "h"), 0, -1, withscores=True)
    ]
    kept_old = sorted(old)[-(HISTORY_MIN_ROWS - len(recent)) :]
    assert stored == [to_micros(t) for t in kept_old + sorted(recent)]


def test_decoding_clients_read_the_same_values(own_db: redis.Redis) -> None:
    n = 500
    rng = random.Random(5)
    ft = datetime.now(UTC) - timedelta(hours=3)
    times = [ft + timedelta(microseconds=rng.randint(0, 10**9)) for _ in range(n)]
    frame = _frame(
        [f"t{i}" for i in range(n)],
        times,
        rt_float=[rng.choice([None, rng.random() * 10 ** rng.randint(-20, 20)]) for _ in range(n)],
        rt_int=[rng.choice([None, rng.randint(0, 10**6)]) for _ in range(n)],
        rt_ts=[rng.choice([None, t]) for t in times],
        rt_str=[rng.choice([None, f's{i}"é']) for i in range(n)],
    )
    assert write_snapshot(own_db, ROUND_TRIP, frame, batch_size=64) == n
    assert own_db.dbsize() == n
    text_client = redis.Redis.from_url(OWN_DB, decode_responses=True)
    now = ft + timedelta(hours=1)
    ents = [{"thing_id": f"t{i}"} for i in range(n)]
    assert [
        f.values
        for f in OnlineFeatureReader(text_client, ROUND_TRIP_SERVICE).get_online_features_many(
            ents, now
        )
    ] == [
        f.values
        for f in OnlineFeatureReader(own_db, ROUND_TRIP_SERVICE).get_online_features_many(ents, now)
    ]
    text_client.close()


def test_a_value_that_is_not_a_layout_3_row_is_an_error(own_db: redis.Redis) -> None:
    reader = OnlineFeatureReader(own_db, ROUND_TRIP_SERVICE)
    now = datetime.now(UTC)
    key = online_key(ROUND_TRIP, "junk")
    own_db.set(key, b"[1, null, 2, null, null, 0]")  # a string, not a sorted set of rows
    with pytest.raises(ValueError, match="not"):
        reader.get_online_features({"thing_id": "junk"}, now=now)
    score = to_micros(now) - 1_000_000
    junks = (b"[1,", b"x", b"5", b'{"a": 1}', b"[1, 2]", b"[1.5, 1, 2, 3, 4, 0]", b"[1] [2]")
    for junk in (*junks, b"[1, null, 2, null, null]", b"[1, null, 2, null, null, 0.5]"):
        own_db.delete(key)
        own_db.zadd(key, {junk: score})
        with pytest.raises(ValueError, match="not"):
            reader.get_online_features({"thing_id": "junk"}, now=now)
