"""Realized performance on a hand-built day of decisions and labels (figures by hand)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import polars as pl
import pytest

from fraud_platform.lib.monitoring.realized import (
    known_labels,
    label_coverage,
    performance,
    with_labels,
)

AS_OF = datetime(2026, 11, 5, 12, tzinfo=UTC)


def decisions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "transaction_id": ["t1", "t2", "t3", "t4", "t5", "t6"],
            "score": [0.9, 0.8, 0.7, 0.2, 0.1, 0.05],
            "decision": ["decline", "review", "approve", "approve", "approve", "approve"],
            "channel": ["ecommerce", "ecommerce", "p2p", "p2p", "ecommerce", "card_present"],
            "amount": [100.0, 50.0, 200.0, 30.0, 10.0, 20.0],
        }
    )


def labels() -> pl.DataFrame:
    at = lambda day, hour=0: datetime(2026, 11, day, hour, tzinfo=UTC)  # noqa: E731
    return pl.DataFrame(
        {
            "transaction_id": ["t1", "t2", "t3", "t5", "t6", "t6", "t_other"],
            "label_time": [at(3), at(2), at(4), at(6), at(2), at(4), at(3)],
            # t5's fraud label is not known yet at AS_OF; t6 was reviewed legit, then charged back
            "is_fraud": [True, False, True, True, False, True, True],
        }
    )


def test_known_labels_latest_before_as_of() -> None:
    known = known_labels(labels(), AS_OF).sort("transaction_id")
    assert known["transaction_id"].to_list() == ["t1", "t2", "t3", "t6", "t_other"]
    assert known.filter(pl.col("transaction_id") == "t6")["is_fraud"].item() is True


def test_performance_by_hand() -> None:
    perf = performance(with_labels(decisions(), known_labels(labels(), AS_OF)), review_budget=2)
    assert (perf["rows"], perf["fraud_labels"], perf["legit_labels"], perf["unlabelled"]) == (
        6,
        3,
        1,
        2,
    )
    # frauds ranked 1, 3, 6: AP = (1/1 + 2/3 + 3/6) / 3
    assert perf["average_precision"] == pytest.approx(13 / 18)
    assert perf["frauds_caught_at_budget"] == 1  # t1, t2 reviewed
    assert perf["precision_at_budget"] == pytest.approx(0.5)
    assert perf["recall_at_budget"] == pytest.approx(1 / 3)
    assert (perf["frauds_caught"], perf["fraud_amount_caught"]) == (1, 100.0)
    assert (perf["frauds_approved"], perf["money_lost"]) == (2, 220.0)
    assert perf["by_decision"] == {
        "approve": {"rows": 4, "frauds": 2, "fraud_amount": 220.0},
        "review": {"rows": 1, "frauds": 0, "fraud_amount": 0.0},
        "decline": {"rows": 1, "frauds": 1, "fraud_amount": 100.0},
    }
    assert perf["by_channel"]["p2p"] == {
        "rows": 2,
        "frauds": 1,
        "frauds_caught": 0,
        "fraud_amount_caught": 0.0,
        "frauds_approved": 1,
        "money_lost": 200.0,
        "average_precision": 1.0,
    }
    assert perf["by_channel"]["ecommerce"]["money_lost"] == 0.0
    assert perf["by_channel"]["card_present"]["money_lost"] == 20.0


def test_performance_without_known_fraud_has_no_ap() -> None:
    perf = performance(with_labels(decisions(), known_labels(labels(), AS_OF).head(0)), 2)
    assert perf["average_precision"] is None and perf["recall_at_budget"] is None
    assert perf["money_lost"] == 0.0


def test_label_coverage() -> None:
    day = date(2026, 11, 1)
    assert label_coverage(day, AS_OF, 7.0) == pytest.approx(3.5 / 7)
    assert label_coverage(day, datetime(2026, 11, 1, 18, tzinfo=UTC), 7.0) == 0.0
    assert label_coverage(day, datetime(2026, 12, 1, tzinfo=UTC), 7.0) == 1.0


def test_without_outages_leaves_out_only_online_store_outages() -> None:
    from fraud_platform.lib.monitoring.decisions import without_outages

    frame = pl.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "degraded_reason": [
                None,
                "online store unavailable: TimeoutError",
                "no online features for groups: account_profile_v1",
                None,
            ],
        }
    )
    kept, left_out = without_outages(frame)
    assert kept["request_id"].to_list() == ["a", "c", "d"] and left_out == 1
