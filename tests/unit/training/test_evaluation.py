"""Unit tests of fraud_platform.lib.training.evaluation (against scikit-learn and hand-computed values)
and of the PNG helpers in fraud_platform.lib.plots."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_platform.lib import plots
from fraud_platform.lib.serving.policy import Thresholds
from fraud_platform.lib.training.evaluation import choose_thresholds, evaluate
from fraud_platform.lib.training.metrics import (
    average_precision,
    recall_at_fpr,
    review_budget_mask,
    roc_auc,
)

# Hand-made cases, several with tied scores (ties across classes and within a class).
CASES = [
    ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]),
    ([1, 0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5, 0.5]),  # all tied
    ([0, 1, 0, 1, 1, 0], [0.2, 0.2, 0.7, 0.7, 0.9, 0.1]),  # ties across classes
    ([1, 1, 0, 0, 0, 1, 0], [0.3, 0.3, 0.3, 0.1, 0.9, 0.9, 0.0]),
    ([0, 0, 0, 1], [1.0, 1.0, 0.5, 0.5]),
    ([1, 0], [0.0, 1.0]),  # perfectly wrong
    ([1, 0, 0, 0, 0, 0, 0, 1], [0.99, 0.01, 0.01, 0.01, 0.02, 0.02, 0.5, 0.5]),
]


@pytest.mark.parametrize(("y", "s"), CASES)
def test_roc_auc_equals_sklearn(y: list[int], s: list[float]) -> None:
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize(("y", "s"), CASES)
def test_average_precision_equals_sklearn(y: list[int], s: list[float]) -> None:
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ranking_metrics_equal_sklearn_on_random_tied_scores() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(2, 60))
        y = rng.integers(0, 2, n).astype(bool)
        if y.all() or not y.any():
            continue
        s = rng.integers(0, 5, n) / 4.0  # heavy ties
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)


def test_ranking_metrics_undefined_for_one_class() -> None:
    assert np.isnan(roc_auc([0, 0], [0.1, 0.2]))
    assert np.isnan(average_precision([0, 0], [0.1, 0.2]))


# Two days, budget 2 reviews/day. Day 1 holds the high scores; a global top-4 would review
# 0.9, 0.8, 0.3, 0.25 but the daily budget reviews 0.9, 0.8 (day 1) and 0.25, 0.2 (day 2).
D1 = datetime(2026, 3, 1, 9, tzinfo=UTC)
D2 = datetime(2026, 3, 2, 23, 59, tzinfo=UTC)
HAND = {
    "scores": [0.9, 0.8, 0.3, 0.1, 0.25, 0.2, 0.05],
    "y": [True, False, True, False, False, True, False],
    "event_time": [D1, D1 + timedelta(hours=1), D1, D1, D2, D2, D2],
    "fraud_type": ["card_testing", None, "account_takeover", None, None, "card_testing", None],
    "channel": ["ecommerce", "ecommerce", "p2p", "p2p", "ecommerce", "p2p", "ecommerce"],
}


def test_review_budget_mask_is_per_day_top_k() -> None:
    mask = review_budget_mask(HAND["scores"], HAND["event_time"], 2)
    assert mask.tolist() == [True, True, False, False, True, True, False]


def test_evaluate_hand_computed_example() -> None:
    frame = pl.DataFrame(HAND, schema_overrides={"event_time": pl.Datetime("us", "UTC")})
    ev = evaluate(
        frame["y"],
        frame["scores"],
        event_time=frame["event_time"],  # polars Series path
        fraud_type=frame["fraud_type"],
        channel=frame["channel"],
        review_budget_per_day=2,
        fpr_target=0.25,
        thresholds=Thresholds(review=0.25, decline=0.85),
    )
    assert (ev.n, ev.positives, ev.negatives, ev.days) == (7, 3, 4, 2)
    # reviewed: 0.9 F, 0.8 L | 0.25 L, 0.2 F -> 2 frauds of 4 reviewed, 2 of 3 frauds caught
    assert ev.reviewed_at_budget == 4
    assert ev.frauds_caught_at_budget == 2
    assert ev.precision_at_budget == pytest.approx(2 / 4)
    assert ev.recall_at_budget == pytest.approx(2 / 3)
    assert ev.expected_cost_at_budget == pytest.approx(1 * 100 + 4 * 2)
    # FPR <= 0.25 allows 1 of 4 negatives: threshold 0.3 flags 0.9, 0.8, 0.3 -> recall 2/3
    assert ev.recall_at_fpr == pytest.approx(2 / 3)
    assert ev.threshold_at_fpr == pytest.approx(0.3)
    # review >= 0.25 flags 0.9, 0.8, 0.3, 0.25 -> frauds 0.9, 0.3; decline >= 0.85 -> 0.9
    assert ev.thresholds_source == "given"
    assert ev.flagged_rate_at_review == pytest.approx(4 / 7)
    assert ev.precision_at_review == pytest.approx(2 / 4)
    assert ev.recall_at_review == pytest.approx(2 / 3)
    assert ev.declined == 1 and ev.precision_at_decline == 1.0
    assert ev.recall_at_decline == pytest.approx(1 / 3)
    assert ev.expected_cost_at_thresholds == pytest.approx(1 * 100 + 4 * 2)
    assert ev.cost_without_model == pytest.approx(300)
    assert ev.per_fraud_type == {
        "account_takeover": {"count": 1, "recall_at_review": 1.0, "recall_at_budget": 0.0},
        "card_testing": {"count": 2, "recall_at_review": 0.5, "recall_at_budget": 1.0},
    }
    p2p = ev.per_channel["p2p"]  # y 1,0,1 with scores 0.3, 0.1, 0.2
    assert (p2p["count"], p2p["positives"]) == (3, 2)
    assert p2p["auc_roc"] == pytest.approx(1.0)
    ecommerce = ev.per_channel["ecommerce"]  # one fraud (0.9) among 0.8, 0.25, 0.05
    assert ecommerce["auc_roc"] == pytest.approx(1.0)
    assert ecommerce["average_precision"] == pytest.approx(1.0)
    assert ev.auc_roc == pytest.approx(roc_auc_score(HAND["y"], HAND["scores"]))
    # JSON-serialisable with plain types
    payload = json.loads(json.dumps(ev.to_dict(), allow_nan=False))
    assert payload["thresholds"] == {"review": 0.25, "decline": 0.85}


def test_evaluate_nan_metrics_become_none_and_thresholds_are_derived() -> None:
    ev = evaluate(
        HAND["y"],
        HAND["scores"],
        event_time=HAND["event_time"],  # list of aware datetimes
        fraud_type=HAND["fraud_type"],
        channel=["card_present"] + HAND["channel"][1:],  # card_present: one fraud, no legit
        review_budget_per_day=2,
    )
    assert ev.thresholds_source == "derived_from_eval_data"
    assert ev.thresholds.decline >= ev.thresholds.review
    payload = ev.to_dict()
    json.dumps(payload, allow_nan=False)
    assert payload["per_channel"]["card_present"]["auc_roc"] is None


def test_recall_at_fpr_threshold_flags_nothing_when_target_unreachable() -> None:
    recall, threshold = recall_at_fpr([0, 1], [0.9, 0.1], 0.0)
    assert recall == 0.0 and threshold == float("inf")


def test_choose_thresholds_invariants() -> None:
    rng = np.random.default_rng(11)
    n = 5000
    y = rng.uniform(size=n) < 0.03
    scores = np.clip(rng.normal(0.2 + 0.5 * y, 0.15), 0, 1).round(3)  # rounded: many ties
    for rate in (0.005, 0.02, 0.1):
        t = choose_thresholds(y, scores, review_rate=rate, decline_precision=0.8)
        flagged = scores >= t.review
        assert flagged.mean() >= rate  # at least the asked share (ties can add a few)
        assert (scores > t.review).mean() < rate  # and only ties above it
        assert t.decline >= t.review
        declined = scores >= t.decline
        assert y[declined].mean() >= 0.8
        # the decline threshold is the lowest with enough precision
        lower = np.unique(scores[scores < t.decline])
        if lower.size and t.decline > t.review:
            assert y[scores >= lower[-1]].mean() < 0.8


def test_choose_thresholds_falls_back_when_precision_unreachable() -> None:
    scores = np.linspace(0, 1, 1000)
    y = np.zeros(1000, dtype=bool)
    y[::50] = True  # 2% fraud spread evenly: precision never reaches 0.9
    t = choose_thresholds(y, scores, review_rate=0.05, decline_precision=0.9)
    assert t.decline == pytest.approx(max(t.review, np.quantile(scores, 0.99)))
    t_high = choose_thresholds(y, scores, review_rate=0.001, decline_precision=0.9)
    assert t_high.decline >= t_high.review
    with pytest.raises(ValueError, match="review_rate"):
        choose_thresholds(y, scores, review_rate=0.0)


def _is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def test_plots_render_png_and_markdown() -> None:
    rng = np.random.default_rng(0)
    y = rng.uniform(size=300) < 0.1
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    for png in (
        plots.pr_curve_png(y, s),
        plots.roc_curve_png(y, s),
        plots.score_distribution_png(y, s),
        plots.feature_importance_png(["amount", "velocity", "country"], [50.0, 30.0, 20.0]),
    ):
        assert _is_png(png)
    png = plots.pr_curve_png(y, s)
    md = plots.png_markdown(png, "PR curve")
    assert md.startswith("![PR curve](data:image/png;base64,") and md.endswith(")")
    assert base64.b64decode(md[len("![PR curve](data:image/png;base64,") : -1]) == png
