"""Feature computation semantics on hand-made events (expected values written by hand)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from fraud_platform.lib.features.catalog import (
    ACCOUNT_SECURITY,
    CARD_VELOCITY,
    USER_DEVICE_HISTORY,
    USER_TXN_VELOCITY,
)
from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
from fraud_platform.lib.features.registry import Entity, Feature, FeatureGroup, FeatureService

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


TXN_DEFAULTS = {
    "user_id": "u1",
    "card_id": "c1",
    "device_id": "d1",
    "country": "DE",
    "merchant_id": "m1",
    "channel": "ecommerce",
}


def txn(minutes: float, amount: float = 1.0, **fields: str) -> dict[str, Any]:
    """One transaction ``minutes`` after T0; the tests name only the fields that differ."""
    return {**TXN_DEFAULTS, **fields, "amount": amount, "event_time": at(minutes)}


def txns(*rows: dict[str, Any]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema_overrides={"event_time": pl.Datetime("us", "UTC")})


def row_at(frame: pl.DataFrame, key: str, minutes: float) -> dict:
    match = frame.filter((pl.col("entity_key") == key) & (pl.col("feature_time") == at(minutes)))
    assert match.height == 1, f"expected one row for {key} at {minutes}, got {match.height}"
    return match.row(0, named=True)


def test_user_velocity_windows_include_events_at_the_same_timestamp() -> None:
    events = txns(
        txn(0, 10.0),
        txn(0, 20.0, merchant_id="m2", channel="p2p"),
        txn(50, 30.0, country="FR"),
        txn(120, 40.0, merchant_id="m3"),
        txn(10, 5.0, user_id="u2", card_id="c2", device_id="d2"),
    )
    rows = compute_feature_group(USER_TXN_VELOCITY, events)
    assert rows.height == 4  # u1 at 0, 50, 120 and u2 at 10: one row per entity and timestamp
    first = row_at(rows, "u1", 0)
    assert first["user_txn_count_1h"] == 2
    assert first["user_amount_sum_1h"] == 30.0
    assert first["user_p2p_count_24h"] == 1
    second = row_at(rows, "u1", 50)
    assert second["user_txn_count_1h"] == 3
    assert second["user_distinct_countries_24h"] == 2
    third = row_at(rows, "u1", 120)
    assert third["user_txn_count_1h"] == 1  # the 1h window (60, 120] holds only itself
    assert third["user_txn_count_24h"] == 4
    assert third["user_amount_max_7d"] == 40.0
    assert third["user_amount_mean_30d"] == pytest.approx(25.0)
    assert third["user_last_txn_time"] == at(120)
    assert row_at(rows, "u2", 10)["user_txn_count_24h"] == 1


def test_card_small_amount_filter_counts_only_matching_events() -> None:
    events = txns(
        txn(0),
        txn(1, 2.0, merchant_id="m2"),
        txn(2, 900.0, merchant_id="m3"),
    )
    last = row_at(compute_feature_group(CARD_VELOCITY, events), "c1", 2)
    assert last["card_small_txn_count_1h"] == 2
    assert last["card_txn_count_10m"] == 3
    assert last["card_distinct_merchants_1h"] == 3


def test_lifetime_features_accumulate_per_composite_entity() -> None:
    events = txns(
        txn(0),
        txn(5, device_id="d2"),
        txn(10),
        txn(15, user_id="u2", card_id="c2"),
    )
    rows = compute_feature_group(USER_DEVICE_HISTORY, events)
    assert row_at(rows, "u1|d1", 10)["user_device_txn_count"] == 2
    assert row_at(rows, "u1|d1", 10)["user_device_first_seen_time"] == at(0)
    assert row_at(rows, "u1|d2", 5)["user_device_txn_count"] == 1
    assert row_at(rows, "u2|d1", 15)["user_device_txn_count"] == 1


def test_account_security_remembers_last_password_change() -> None:
    events = pl.DataFrame(
        [
            {
                "user_id": "u1",
                "event_type": t,
                "device_id": "d",
                "ip": "1.1.1.1",
                "country": "DE",
                "event_time": at(m),
            }
            for t, m in [
                ("password_change", 0),
                ("login", 30),
                ("login_failed", 40),
                ("login_failed", 41),
            ]
        ],
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )
    rows = compute_feature_group(ACCOUNT_SECURITY, events)
    last = row_at(rows, "u1", 41)
    assert last["last_password_change_time"] == at(0)
    assert last["failed_logins_1h"] == 2
    assert last["logins_24h"] == 1
    assert last["last_twofa_disabled_time"] is None


def test_latest_per_entity_keeps_the_newest_row() -> None:
    events = txns(
        txn(0),
        txn(90, 7.0),
    )
    latest = latest_per_entity(compute_feature_group(USER_TXN_VELOCITY, events))
    assert latest.height == 1
    assert latest.row(0, named=True)["feature_time"] == at(90)


def test_feature_service_rejects_a_feature_declared_twice() -> None:
    duplicate = FeatureGroup(
        name="dup",
        version=1,
        entity=Entity("user", ("user_id",)),
        source="fct_transactions",
        event_time_column="event_time",
        ttl=timedelta(days=1),
        owner="x",
        description="x",
        features=(Feature("user_txn_count_1h", "count", window=timedelta(hours=1)),),
    )
    with pytest.raises(ValueError, match="declared twice"):
        FeatureService("dup_service", (USER_TXN_VELOCITY, duplicate), (), ())
