"""Label-delay-aware merchant fraud rate and p2p counterparty features, offline and online."""

import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.catalog import (
    COUNTERPARTY_INBOUND,
    MERCHANT_ACTIVITY,
    MERCHANT_FRAUD,
    USER_COUNTERPARTY_HISTORY,
)
from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
from fraud_platform.lib.features.online.layout import online_key
from fraud_platform.lib.features.online.reader import OnlineFeatureReader
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.request import request_features
from tests.redis_server import redis_db_url

T0 = datetime(2026, 10, 1, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _txns(rows: list[tuple[str, str, str | None, str, float]]) -> pl.DataFrame:
    """(user, merchant, counterparty, channel, hours) -> transactions."""
    return pl.DataFrame(
        [
            {
                "transaction_id": f"t{i}",
                "user_id": user,
                "merchant_id": merchant,
                "counterparty_id": counterparty,
                "channel": channel,
                "amount": 10.0 + i,
                "event_time": at(hours),
            }
            for i, (user, merchant, counterparty, channel, hours) in enumerate(rows)
        ],
        schema_overrides={"event_time": TS, "counterparty_id": pl.String},
    )


def _lookup(frame: pl.DataFrame, groups, group_rows) -> list[dict]:
    return point_in_time_join(frame, groups, group_rows).iter_rows(named=True)


def test_merchant_fraud_is_counted_from_when_the_label_became_known() -> None:
    # t0 at merchant m is a fraud that happened at hour 0 but was reported at hour 48.
    txns = _txns([("u1", "m", None, "ecommerce", h) for h in (0, 1, 2, 24, 47, 49)])
    labels = pl.DataFrame(
        {"transaction_id": ["t0"], "merchant_id": ["m"], "label_time": [at(48)]},
        schema_overrides={"label_time": TS},
    )
    groups = [MERCHANT_ACTIVITY, MERCHANT_FRAUD]
    rows = {
        MERCHANT_ACTIVITY.versioned_name: compute_feature_group(MERCHANT_ACTIVITY, txns),
        MERCHANT_FRAUD.versioned_name: compute_feature_group(MERCHANT_FRAUD, labels),
    }
    looked_up = list(_lookup(txns.select("merchant_id", "event_time"), groups, rows))
    rates = [
        request_features({**txn, "merchant_category": "x"}, seen)["merchant_fraud_rate_30d"]
        for txn, seen in zip(txns.iter_rows(named=True), looked_up, strict=True)
    ]
    # hour 0: the merchant has no history yet; hours 1..47: the fraud is not known yet
    assert rates[0] is None
    assert rates[1:5] == [0.0, 0.0, 0.0, 0.0]
    # hour 49: one known fraud over the 5 earlier transactions
    assert looked_up[5]["merchant_fraud_labels_30d"] == 1
    assert rates[5] == pytest.approx(1 / 5)


def test_counterparty_senders_and_first_transfer() -> None:
    txns = _txns(
        [
            ("u1", "m", "mule", "p2p", 0),
            ("u2", "m", "mule", "p2p", 1),
            ("u1", "m", "mule", "p2p", 2),
            ("u3", "m", "mule", "p2p", 3),
            ("u3", "m", None, "ecommerce", 4),
            ("u4", "m", "mule", "p2p", 30),  # the first three senders are > 24h old by now
        ]
    )
    groups = [COUNTERPARTY_INBOUND, USER_COUNTERPARTY_HISTORY]
    rows = {g.versioned_name: compute_feature_group(g, txns) for g in groups}
    # the card payment (no counterparty) belongs to no counterparty entity
    assert all(r.height == 5 for r in rows.values())
    looked_up = list(_lookup(txns.select("user_id", "counterparty_id", "event_time"), groups, rows))
    senders = [r["counterparty_senders_24h"] for r in looked_up]
    # the window ends at the lookup: at hour 30 the senders of hours 0-3 have left it
    assert senders == [None, 1, 2, 2, None, 0]
    first = [
        request_features({**txn, "merchant_category": "x"}, seen)[
            "is_first_transfer_to_counterparty"
        ]
        for txn, seen in zip(txns.iter_rows(named=True), looked_up, strict=True)
    ]
    assert first == [1, 1, 0, 1, 0, 1]


def test_online_reader_skips_groups_with_a_null_join_key() -> None:
    # Redis expires keys on the wall clock: the events must be recent.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    mule = f"mule-{uuid.uuid4().hex}"
    txns = _txns([("u1", "m", mule, "p2p", 0), ("u2", "m", mule, "p2p", 1)]).with_columns(
        pl.col("event_time") - T0 + start
    )
    client = redis.Redis.from_url(redis_db_url(0), socket_timeout=5)
    groups = (COUNTERPARTY_INBOUND, USER_COUNTERPARTY_HISTORY)
    written = [(g, latest_per_entity(compute_feature_group(g, txns))) for g in groups]
    try:
        for group, rows in written:
            write_snapshot(client, group, rows)
        reader = OnlineFeatureReader(client, FeatureService("t", groups, (), ()))
        now = start + timedelta(hours=2)
        p2p = reader.get_online_features({"user_id": "u1", "counterparty_id": mule}, now=now)
        assert p2p.values["counterparty_senders_24h"] == 2
        assert p2p.values["user_counterparty_transfer_count"] == 1
        card = reader.get_online_features({"user_id": "u1", "counterparty_id": None}, now=now)
        assert card.missing_groups == [g.versioned_name for g in groups]
        assert all(v is None for v in card.values.values())
    finally:
        for group, rows in written:
            client.delete(*[online_key(group, key) for key in rows["entity_key"]])
