"""The thin-data features (card spending over 1/7/30 days, amount-to-mean ratios, merchant fraud
rates from labels known at the time) against values computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from fraud_platform.lib.features.catalog import MERCHANT_FRAUD_LABELS, TXN
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.services import FRAUD_SCORING_THIN_V1 as SERVICE
from fraud_platform.lib.features.services import THIN_FIELDS
from fraud_platform.lib.features.training_frame import build_training_frame

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
LABEL_TIME = T0 + 7 * D + H  # the fraud at m1 (t4, at T0 + 1h) becomes known 7 days later


def _txn(tid: str, time: datetime, card: str, merchant: str, amount: float) -> dict:
    return {
        "transaction_id": tid,
        "event_time": time,
        "user_id": "u" + card,
        "card_id": card,
        "merchant_id": merchant,
        "amount": amount,
        "channel": "card_present",
        "merchant_category": "unknown",
    }


HISTORY = [
    _txn("t1", T0, "c1", "m1", 10.0),
    _txn("t4", T0 + H, "c2", "m1", 100.0),
    _txn("t2", T0 + 2 * H, "c1", "m1", 30.0),
    _txn("t3", T0 + 3 * D, "c1", "m2", 50.0),
]


def _features(queries: list[dict]) -> pl.DataFrame:
    """The thin service's model features of ``queries`` (point in time, offline path)."""
    history = pl.DataFrame(HISTORY)
    merchant_labels = pl.DataFrame(
        {
            "transaction_id": ["t4"],
            "merchant_id": ["m1"],
            "fraud_type": ["compromised_merchant"],
            "label_time": [LABEL_TIME],
            "transaction_time": [T0 + H],
        }
    )
    sources = {TXN: history, MERCHANT_FRAUD_LABELS: merchant_labels}
    groups = {g.versioned_name: compute_feature_group(g, sources[g.source]) for g in SERVICE.groups}
    rows = pl.DataFrame(queries).with_columns(is_fraud=pl.lit(False), fraud_type=pl.lit(None))
    return build_training_frame(rows, groups, SERVICE)


def test_thin_service_reads_only_thin_fields() -> None:
    for group in SERVICE.groups:
        assert group.entity.join_keys[0] in THIN_FIELDS
        for feature in group.features:
            assert feature.column in (
                None,
                "amount",
                "event_time",
                "label_time",
                "merchant_id",
                "user_id",
            )
    assert SERVICE.categorical_features == ()


def test_card_spending_and_amount_ratios_by_hand() -> None:
    query = _txn("q1", T0 + 3 * D + H, "c1", "m1", 200.0)
    row = _features([query]).row(0, named=True)
    # the card's latest row is t3 (T0 + 3d): 1 day holds t3; 7 and 30 days hold t1, t2, t3
    assert row["card_spend_count_1d"] == 1 and row["card_spend_mean_1d"] == pytest.approx(50.0)
    assert row["card_spend_count_7d"] == 3 and row["card_spend_mean_7d"] == pytest.approx(30.0)
    assert row["card_spend_count_30d"] == 3 and row["card_spend_mean_30d"] == pytest.approx(30.0)
    assert row["card_spend_max_7d"] == pytest.approx(50.0)
    assert row["card_spend_std_30d"] == pytest.approx(20.0)  # sample std of 10, 30, 50
    assert row["card_spend_merchants_1d"] == 1
    assert row["amount_to_card_mean_1d"] == pytest.approx(200 / 50)
    assert row["amount_to_card_mean_7d"] == pytest.approx(200 / 30)
    assert row["amount_to_card_mean_30d"] == pytest.approx(200 / 30)
    assert row["seconds_since_last_card_spend"] == pytest.approx(3600.0)


def test_a_card_without_history_has_no_ratio() -> None:
    row = _features([_txn("q0", T0 + 3 * D + H, "c9", "m1", 20.0)]).row(0, named=True)
    assert row["card_spend_count_7d"] is None and row["amount_to_card_mean_7d"] is None
    assert row["seconds_since_last_card_spend"] is None


# m1's transactions: T0, T0 + 1h, T0 + 2h. Windows end at the lookup (``windows.py``): at
# T0 + 3d the 24-hour window is empty and 7 days hold all three; from the label's day on only
# 30 days do (the 7-day window starts at 2026-03-01 03:36, its 2.8-hour granule rounding up).
@pytest.mark.parametrize(
    ("at", "known", "counts"),
    [
        (T0 + 3 * D, False, (0, 3, 3)),  # long before the label arrives
        (LABEL_TIME - timedelta(seconds=1), False, (0, 0, 3)),  # one second before it arrives
        (LABEL_TIME, False, (0, 0, 3)),  # at the same instant: strictly before only
        (LABEL_TIME + timedelta(seconds=1), True, (0, 0, 3)),
        (LABEL_TIME + H, True, (0, 0, 3)),
    ],
)
def test_merchant_fraud_rates_count_only_labels_known_before_the_lookup(
    at: datetime, known: bool, counts: tuple[int, int, int]
) -> None:
    row = _features([_txn("q2", at, "c1", "m1", 20.0)]).row(0, named=True)
    names = ("merchant_txn_count_24h", "merchant_txn_count_7d", "merchant_txn_count_30d")
    assert tuple(row[name] for name in names) == counts
    labels = 1 if known else 0
    for rate, count in zip(("1d", "7d", "30d"), counts, strict=True):
        expected = None if count == 0 else pytest.approx(labels / count)  # x / 0: null
        assert row[f"merchant_fraud_rate_{rate}"] == expected, rate
    assert row["merchant_fraud_labels_7d"] == (1 if known else None)  # no row: none known
    if known:
        elapsed = (at - LABEL_TIME).total_seconds()
        assert row["seconds_since_merchant_fraud_label"] == pytest.approx(elapsed)
    else:
        assert row["seconds_since_merchant_fraud_label"] is None


def test_a_merchant_without_transactions_has_no_rate() -> None:
    row = _features([_txn("q3", LABEL_TIME + H, "c1", "m7", 20.0)]).row(0, named=True)
    assert row["merchant_txn_count_7d"] is None
    assert row["merchant_fraud_rate_7d"] is None and row["merchant_fraud_rate_30d"] is None
