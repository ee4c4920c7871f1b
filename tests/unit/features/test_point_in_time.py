"""The point-in-time join never leaks the future and honours the TTL."""

from datetime import UTC, datetime, timedelta

import polars as pl

from fraud_platform.lib.features.catalog import CARD_VELOCITY, USER_TXN_VELOCITY
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.training_frame import build_training_frame, label_transactions

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _events(rows: list[tuple[str, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "transaction_id": f"t{i}",
                "user_id": u,
                "card_id": f"card-{u}",
                "device_id": "d",
                "country": "DE",
                "merchant_id": "m",
                "merchant_category": "grocery",
                "channel": "ecommerce",
                "counterparty_id": None,
                "amount": amount,
                "event_time": at(minutes),
            }
            for i, (u, amount, minutes) in enumerate(rows)
        ],
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )


def test_training_row_never_sees_its_own_or_later_events() -> None:
    # A burst: the fraud at minute 10 is followed by 5 more events. A naive "latest row per user"
    # join (or an as-of join that allows equal timestamps) would hand the fraud row counts of 6+.
    events = _events([("u1", 5.0, 0), ("u1", 999.0, 10)] + [("u1", 1.0, 11 + i) for i in range(5)])
    groups = {USER_TXN_VELOCITY.versioned_name: compute_feature_group(USER_TXN_VELOCITY, events)}
    query = events.filter(pl.col("transaction_id") == "t1").select("user_id", "event_time")
    joined = point_in_time_join(query, [USER_TXN_VELOCITY], groups)
    row = joined.row(0, named=True)
    assert row["user_txn_count_1h"] == 1  # only the minute-0 event is strictly before minute 10
    assert row["user_amount_sum_1h"] == 5.0
    assert row["user_last_txn_time"] == at(0)
    naive = groups[USER_TXN_VELOCITY.versioned_name].sort("feature_time").tail(1)
    assert naive["user_txn_count_1h"].item() == 7  # what a leaky join would have used


def test_equal_timestamps_are_not_visible() -> None:
    events = _events([("u1", 5.0, 0), ("u1", 7.0, 0)])
    groups = {USER_TXN_VELOCITY.versioned_name: compute_feature_group(USER_TXN_VELOCITY, events)}
    joined = point_in_time_join(events.select("user_id", "event_time"), [USER_TXN_VELOCITY], groups)
    assert joined["user_txn_count_1h"].to_list() == [None, None]


def test_values_older_than_the_ttl_are_null() -> None:
    assert CARD_VELOCITY.ttl == timedelta(days=7)
    events = _events([("u1", 5.0, 0)])
    groups = {CARD_VELOCITY.versioned_name: compute_feature_group(CARD_VELOCITY, events)}
    query = pl.DataFrame(
        {"card_id": ["card-u1", "card-u1"], "event_time": [at(60), at(7 * 24 * 60 + 1)]},
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )
    joined = point_in_time_join(query, [CARD_VELOCITY], groups)
    assert joined["card_txn_count_24h"].to_list() == [1, None]


def test_join_keeps_the_order_of_entity_rows() -> None:
    events = _events([("u1", 1.0, 0), ("u2", 2.0, 5)])
    groups = {USER_TXN_VELOCITY.versioned_name: compute_feature_group(USER_TXN_VELOCITY, events)}
    query = pl.DataFrame(
        {"user_id": ["u2", "u1", "u3"], "event_time": [at(30), at(30), at(30)]},
        schema_overrides={"event_time": pl.Datetime("us", "UTC")},
    )
    joined = point_in_time_join(query, [USER_TXN_VELOCITY], groups)
    assert joined["user_id"].to_list() == ["u2", "u1", "u3"]
    assert joined["user_amount_sum_1h"].to_list() == [2.0, 1.0, None]


def test_unmatured_transactions_are_excluded_and_counted() -> None:
    events = _events([("u1", 1.0, 0), ("u1", 2.0, 60 * 24 * 5), ("u1", 3.0, 60 * 24 * 9)])
    labels = pl.DataFrame(
        {
            "transaction_id": ["t0", "t1"],
            "label_time": [at(60 * 24 * 2), at(60 * 24 * 11)],
            "is_fraud": [True, True],
            "fraud_type": ["stolen_card", "stolen_card"],
        },
        schema_overrides={"label_time": pl.Datetime("us", "UTC")},
    )
    labelled = label_transactions(
        events, labels, as_of=at(60 * 24 * 10), maturity=timedelta(days=4)
    )
    # t0 matured with a known fraud label; t1 matured, its label (day 11) is not known yet at day 10
    assert labelled.frame["transaction_id"].to_list() == ["t0", "t1"]
    assert labelled.frame["is_fraud"].to_list() == [True, False]
    assert labelled.unmatured_excluded == 1


def test_training_frame_has_every_model_feature() -> None:
    events = _events([("u1", 10.0, 0), ("u1", 30.0, 30)])
    groups = {
        g.versioned_name: compute_feature_group(g, events)
        for g in FRAUD_SCORING_V1.groups
        if g.source == "fct_transactions"
    }
    for g in FRAUD_SCORING_V1.groups:
        if g.versioned_name not in groups:
            groups[g.versioned_name] = compute_feature_group(
                g,
                events.head(0).with_columns(
                    pl.lit("login").alias("event_type"),
                    pl.lit("1.1.1.1").alias("ip"),
                    pl.col("event_time").alias("label_time"),
                    pl.col("event_time").alias("valid_from"),
                    pl.col("event_time").alias("signup_time"),
                    pl.lit(1).alias("kyc_level"),
                    pl.lit("personal").alias("account_type"),
                    pl.col("country").alias("home_country"),
                ),
            )
    labelled = events.with_columns(
        pl.lit(False).alias("is_fraud"), pl.lit(None, pl.String).alias("fraud_type")
    )
    frame = build_training_frame(labelled, groups, FRAUD_SCORING_V1)
    assert set(FRAUD_SCORING_V1.model_features) <= set(frame.columns)
    second = frame.row(1, named=True)
    assert second["amount_to_user_mean_30d"] == 3.0  # 30 / mean of the earlier 10
    assert second["seconds_since_last_user_txn"] == 1800.0
    assert second["is_new_device_for_user"] == 0
    assert frame.row(0, named=True)["is_new_device_for_user"] == 1
