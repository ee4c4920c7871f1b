"""The decision policy (fraud_platform/lib/serving/policy.py): every branch of ``decide``,
each rule firing and not firing, each branch of the degraded-mode table (channel x amount),
severity ordering; and evaluation, backtests and the promotion gate reporting exactly the
decisions of the policy applied row by row to the same frame."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import permutations
from typing import Any

import numpy as np
import polars as pl
import pytest
from catboost import CatBoostClassifier

from fraud_platform.lib.model.input import predict_proba, to_model_input
from fraud_platform.lib.serving.policy import (
    DECISIONS,
    DEFAULT_RULES,
    MONEY_OUT_CHANNELS,
    Rule,
    RuleConfig,
    RuleInput,
    Thresholds,
    apply_policy,
    apply_policy_many,
    decide,
    default_rules,
    most_severe,
    rule_columns,
    rule_inputs,
    unmeasured_rules,
)
from fraud_platform.lib.training import backtest, evaluation, promotion

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TXN: dict[str, Any] = {  # the service's example transaction (models_bento.schemas)
    "transaction_id": "t-1",
    "event_time": NOW,
    "user_id": "u-42",
    "card_id": "c-42-1",
    "merchant_id": "m-981",
    "merchant_category": "electronics",
    "amount": 129.99,
    "currency": "EUR",
    "channel": "ecommerce",
    "counterparty_id": None,
    "device_id": "d-7f3a",
    "ip": "203.0.113.7",
    "country": "DE",
}
LIMITS = Thresholds(review=0.5, decline=0.9)


def txn(**overrides: Any) -> dict[str, Any]:
    return {**TXN, **overrides}


# ---------------------------------------------------------------------------------------------
# decide / thresholds


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        (0.0, "approve"),
        (0.49, "approve"),
        (0.5, "review"),
        (0.89, "review"),
        (0.9, "decline"),
        (1.0, "decline"),
    ],
)
def test_decide_thresholds_are_inclusive(score: float, expected: str):
    assert decide(score, {"review": 0.5, "decline": 0.9}) == expected
    assert decide(score, Thresholds(review=0.5, decline=0.9)) == expected


def test_decide_equal_thresholds_never_review():
    assert decide(0.7, {"review": 0.7, "decline": 0.7}) == "decline"
    assert decide(0.69, {"review": 0.7, "decline": 0.7}) == "approve"


@pytest.mark.parametrize(
    "bad",
    [
        {"review": 0.9, "decline": 0.5},
        {"review": -0.1, "decline": 0.5},
        {"review": 0.5},
        {"review": 0.5, "decline": 1.5},
    ],
)
def test_thresholds_reject_inconsistent_values(bad: dict):
    with pytest.raises(ValueError):
        Thresholds.of(bad)


def test_most_severe_orders_decisions():
    assert most_severe("approve", "review") == "review"
    assert most_severe("decline", "approve", "review") == "decline"
    assert most_severe("approve") == "approve"


def test_thresholds_of_mapping_and_instance_agree():
    limits = Thresholds.of({"review": 0.25, "decline": 0.75})
    assert limits == Thresholds(review=0.25, decline=0.75)
    assert Thresholds.of(limits) is limits
    assert limits.to_dict() == {"review": 0.25, "decline": 0.75}


def test_most_severe_is_order_independent():
    for a, b in permutations(DECISIONS, 2):
        assert most_severe(a, b) == max(a, b, key=DECISIONS.index)
    assert most_severe(*DECISIONS) == most_severe(*reversed(DECISIONS)) == "decline"


# ---------------------------------------------------------------------------------------------
# rules


def rule(name: str) -> Rule:
    return next(r for r in DEFAULT_RULES if r.name == name)


def facts(row: dict[str, Any], degraded: bool = False, **txn_fields: Any) -> RuleInput:
    return RuleInput(txn=txn(**txn_fields), row={"amount": 10.0, **row}, degraded=degraded)


def test_rule_ato_fires_only_with_all_three_conditions():
    ato = rule("large_amount_new_device_after_password_change")
    hit = {"amount": 5_000.0, "is_new_device_for_user": 1, "minutes_since_password_change": 12.0}
    assert ato.action == "decline"
    assert ato.fires(facts(hit))
    assert not ato.fires(facts({**hit, "amount": 900.0}))
    assert not ato.fires(facts({**hit, "is_new_device_for_user": 0}))
    assert not ato.fires(facts({**hit, "minutes_since_password_change": 61.0}))
    assert not ato.fires(facts({**hit, "minutes_since_password_change": None}))


def test_rule_limits_come_from_config():
    ato = next(
        r
        for r in default_rules(RuleConfig(hard_limit_amount=100.0))
        if r.name == "large_amount_new_device_after_password_change"
    )
    row = {"amount": 150.0, "is_new_device_for_user": 1, "minutes_since_password_change": 5.0}
    assert ato.fires(facts(row))
    assert "100" in ato.description


def test_rule_card_testing_and_twofa_withdrawal():
    assert rule("card_testing_burst").fires(facts({"card_small_txn_count_1h": 5}))
    assert not rule("card_testing_burst").fires(facts({"card_small_txn_count_1h": 4}))
    assert not rule("card_testing_burst").fires(facts({"card_small_txn_count_1h": None}))
    twofa = rule("withdrawal_after_twofa_disabled")
    assert twofa.fires(facts({"minutes_since_twofa_disabled": 3.0}, channel="withdrawal"))
    assert not twofa.fires(facts({"minutes_since_twofa_disabled": 3.0}, channel="ecommerce"))


def test_rule_degraded_large_amount_needs_degraded():
    degraded = rule("degraded_large_amount")
    assert degraded.fires(facts({"amount": 600.0}, degraded=True))
    assert not degraded.fires(facts({"amount": 600.0}, degraded=False))
    assert not degraded.fires(facts({"amount": 100.0}, degraded=True))


def test_rule_ato_password_change_window_bounds():
    ato = rule("large_amount_new_device_after_password_change")
    hit = {"amount": 5_000.0, "is_new_device_for_user": 1}
    assert ato.fires(facts({**hit, "minutes_since_password_change": 0.0}))
    assert not ato.fires(facts({**hit, "minutes_since_password_change": 60.0}))
    assert not ato.fires(facts({**hit, "minutes_since_password_change": -1.0}))  # in the future
    assert not ato.fires(facts({**hit, "amount": 1_000.0, "minutes_since_password_change": 5.0}))


def test_rule_twofa_withdrawal_needs_a_recent_disable():
    twofa = rule("withdrawal_after_twofa_disabled")
    assert twofa.action == "review"
    assert not twofa.fires(facts({"minutes_since_twofa_disabled": 61.0}, channel="withdrawal"))
    assert not twofa.fires(facts({"minutes_since_twofa_disabled": None}, channel="withdrawal"))
    assert not twofa.fires(facts({}, channel="withdrawal"))


def test_rule_card_testing_action_and_config():
    burst = rule("card_testing_burst")
    assert burst.action == "review"
    strict = next(
        r
        for r in default_rules(RuleConfig(card_testing_small_txn_count_1h=2))
        if r.name == "card_testing_burst"
    )
    assert strict.fires(facts({"card_small_txn_count_1h": 2}))
    assert not burst.fires(facts({"card_small_txn_count_1h": 2}))


# ---------------------------------------------------------------------------------------------
# the degraded-mode table: channel x amount


DEGRADED_TABLE = [
    # channel, amount, review at least?
    ("withdrawal", 200.01, True),
    ("withdrawal", 200.0, False),
    ("withdrawal", 50.0, False),
    ("p2p", 450.0, True),
    ("p2p", 199.0, False),
    ("card_present", 500.01, True),
    ("card_present", 500.0, False),
    ("ecommerce", 900.0, True),
    ("ecommerce", 300.0, False),
    ("deposit", 650.0, True),
    ("deposit", 450.0, False),
]


@pytest.mark.parametrize(("channel", "amount", "floor_review"), DEGRADED_TABLE)
def test_degraded_policy_per_channel_and_amount(channel: str, amount: float, floor_review: bool):
    degraded = facts({"amount": amount}, degraded=True, channel=channel, amount=amount)
    low = apply_policy(0.01, degraded, LIMITS)  # the model would approve
    assert low.model_decision == "approve"
    assert low.decision == ("review" if floor_review else "approve")
    assert ("degraded_large_amount" in low.rule_hits) is floor_review
    # the same transaction, not degraded: the degraded rule never fires
    healthy = facts({"amount": amount}, degraded=False, channel=channel, amount=amount)
    assert apply_policy(0.01, healthy, LIMITS).decision == "approve"
    # the degraded policy never declines by itself; a model decline stands, and is the model's
    high = apply_policy(0.95, degraded, LIMITS)
    assert high.decision == high.model_decision == "decline"
    mid = apply_policy(0.6, degraded, LIMITS)
    assert mid.decision == "review"


def test_degraded_limits_cover_every_channel_and_come_from_config():
    config = RuleConfig(degraded_review_amount=1_000.0, degraded_money_out_review_amount=50.0)
    for channel in ("withdrawal", "p2p"):
        assert channel in MONEY_OUT_CHANNELS
        assert config.degraded_limit(channel) == 50.0
    for channel in ("card_present", "ecommerce", "deposit", None):
        assert config.degraded_limit(channel) == 1_000.0
    degraded = next(r for r in default_rules(config) if r.name == "degraded_large_amount")
    assert degraded.action == "review"
    assert "50" in degraded.description and "1000" in degraded.description
    assert degraded.fires(facts({"amount": 60.0}, degraded=True, channel="withdrawal"))
    assert not degraded.fires(facts({"amount": 600.0}, degraded=True, channel="ecommerce"))


def test_only_named_rules_decline():
    assert [r.name for r in DEFAULT_RULES if r.action == "decline"] == [
        "large_amount_new_device_after_password_change"
    ]


# ---------------------------------------------------------------------------------------------
# apply_policy


def test_apply_policy_takes_the_most_severe_and_names_the_rules():
    ato = {"amount": 5_000.0, "is_new_device_for_user": 1, "minutes_since_password_change": 5.0}
    verdict = apply_policy(0.1, facts(ato, amount=5_000.0), LIMITS)
    assert (verdict.model_decision, verdict.decision) == ("approve", "decline")
    assert verdict.rule_hits == ["large_amount_new_device_after_password_change"]
    burst = facts({"card_small_txn_count_1h": 9})
    assert apply_policy(0.95, burst, LIMITS).decision == "decline"  # a review rule never lowers
    assert apply_policy(0.1, burst, LIMITS).decision == "review"
    quiet = apply_policy(0.7, facts({}), LIMITS)
    assert (quiet.decision, quiet.rule_hits) == ("review", [])
    assert apply_policy(0.1, burst, LIMITS, rules=()).decision == "approve"


def test_apply_policy_many_is_apply_policy_row_by_row():
    rows = [facts({"card_small_txn_count_1h": c}) for c in (0, 7, 1)]
    scores = [0.95, 0.2, 0.55]
    many = apply_policy_many(np.array(scores), rows, {"review": 0.5, "decline": 0.9})
    assert many == [apply_policy(s, f, LIMITS) for s, f in zip(scores, rows, strict=True)]
    assert [v.decision for v in many] == ["decline", "review", "review"]
    with pytest.raises(ValueError, match="rule inputs"):
        apply_policy_many([0.1], rows, LIMITS)


# ---------------------------------------------------------------------------------------------
# offline rows: one RuleInput builder


def test_rule_inputs_read_the_frame_columns_the_rules_need():
    frame = pl.DataFrame(
        {
            "amount": [12.0, 3_000.0],
            "channel": ["withdrawal", "ecommerce"],
            "minutes_since_twofa_disabled": [4.0, None],
            "unrelated": [1, 2],
        }
    )
    inputs = rule_inputs(frame)
    assert [set(i.row) for i in inputs] == [set(frame.columns) - {"unrelated"}] * 2
    assert all(i.txn is i.row and not i.degraded for i in inputs)
    assert rule("withdrawal_after_twofa_disabled").fires(inputs[0])
    assert unmeasured_rules(frame.columns) == {
        "large_amount_new_device_after_password_change": [
            "is_new_device_for_user",
            "minutes_since_password_change",
        ],
        "card_testing_burst": ["card_small_txn_count_1h"],
    }
    assert rule_columns()[:2] == ("amount", "channel")
    with pytest.raises(ValueError, match="amount"):
        rule_inputs(frame.drop("amount"))


# ---------------------------------------------------------------------------------------------
# evaluation, backtests and the gate report the policy applied row by row

START = datetime(2026, 2, 1, tzinfo=UTC)
N = 24 * 10


@pytest.fixture(scope="module")
def rows() -> pl.DataFrame:
    """Hourly point-in-time rows with the request-time features the rules read, some of which
    make each rule fire."""
    rng = np.random.default_rng(11)
    amount = rng.lognormal(4.0, 1.2, N)
    channel = rng.choice(["ecommerce", "p2p", "card_present", "withdrawal"], N)
    new_device = (rng.random(N) < 0.3).astype(np.int64)
    password = np.where(rng.random(N) < 0.3, rng.uniform(0, 120, N), np.nan)
    twofa = np.where(rng.random(N) < 0.2, rng.uniform(0, 120, N), np.nan)
    small = rng.poisson(1.5, N)
    takeover = np.arange(N) % 25 == 0  # a large payment from a new device after a password change
    amount[takeover] = rng.uniform(1_200, 5_000, takeover.sum())
    new_device[takeover] = 1
    password[takeover] = rng.uniform(1, 50, takeover.sum())
    y = (amount > 300) & (new_device == 1) | (rng.random(N) < 0.05)
    return pl.DataFrame(
        {
            "transaction_id": [f"t{i:04d}" for i in range(N)],
            "event_time": [START + timedelta(hours=i) for i in range(N)],
            "is_fraud": y,
            "fraud_type": [None] * N,
            "amount": amount,
            "channel": channel,
            "is_new_device_for_user": new_device,
            "minutes_since_password_change": password,
            "minutes_since_twofa_disabled": twofa,
            "card_small_txn_count_1h": small,
        }
    ).with_columns(pl.col(pl.Float64).fill_nan(None))


@pytest.fixture(scope="module")
def model(rows: pl.DataFrame) -> CatBoostClassifier:
    pool = to_model_input(
        rows, ["amount", "channel"], ["channel"], label=rows["is_fraud"].cast(pl.Int8).to_numpy()
    )
    return CatBoostClassifier(iterations=30, depth=3, random_seed=3, verbose=0).fit(pool)


def by_hand(scores: Any, frame: pl.DataFrame, limits: Thresholds) -> list:
    """The policy row by row, from each whole row (not through rule_inputs)."""
    return [
        apply_policy(float(s), RuleInput(txn=row, row=row), limits)
        for s, row in zip(scores, frame.iter_rows(named=True), strict=True)
    ]


def expected_report(verdicts: list, y: np.ndarray) -> dict[str, Any]:
    decisions = [v.decision for v in verdicts]
    flagged = np.array([d != "approve" for d in decisions])
    declined = np.array([d == "decline" for d in decisions])
    return {
        "decisions": {d: decisions.count(d) for d in DECISIONS},
        "rule_hits": {r.name: sum(r.name in v.rule_hits for v in verdicts) for r in DEFAULT_RULES},
        "precision_flagged": (flagged & y).sum() / flagged.sum(),
        "recall_flagged": (flagged & y).sum() / y.sum(),
        "recall_declined": (declined & y).sum() / y.sum(),
    }


def assert_report(report: dict[str, Any], expected: dict[str, Any]) -> None:
    assert report["decisions"] == expected["decisions"]
    assert report["flagged"] == expected["decisions"]["review"] + expected["decisions"]["decline"]
    assert report["rule_hits"] == expected["rule_hits"]
    for key in ("precision_flagged", "recall_flagged", "recall_declined"):
        assert report[key] == pytest.approx(expected[key])


def test_the_frame_exercises_every_offline_rule(rows, model) -> None:
    verdicts = by_hand(predict_proba(model, rows), rows, LIMITS)
    hits = Counter(name for v in verdicts for name in v.rule_hits)
    assert set(hits) == {r.name for r in DEFAULT_RULES} - {"degraded_large_amount"}
    assert sum(v.decision != v.model_decision for v in verdicts) > 0


def test_evaluation_reports_the_policy_row_by_row(rows, model) -> None:
    scores = predict_proba(model, rows)
    y = rows["is_fraud"].to_numpy()
    sample = {
        "event_time": rows["event_time"].to_numpy(),
        "fraud_type": rows["fraud_type"].to_list(),
        "channel": rows["channel"].to_list(),
        "review_budget_per_day": 5,
        "thresholds": LIMITS,
    }
    ev = evaluation.evaluate(y, scores, **sample, policy_rows=rows)
    verdicts = by_hand(scores, rows, LIMITS)
    assert_report(ev.policy, expected_report(verdicts, y))
    assert ev.policy["rules_unmeasured"] == {}
    assert ev.policy["raised_by_rules"] == sum(v.decision != v.model_decision for v in verdicts)
    # the model-only figures stay the thresholds' decision
    assert ev.declined == sum(v.model_decision == "decline" for v in verdicts)
    assert ev.to_dict()["policy"]["decisions"] == ev.policy["decisions"]
    without = evaluation.evaluate(y, scores, **sample)
    assert without.policy is None and without.declined == ev.declined


def test_backtest_reports_the_policy_row_by_row(rows, model) -> None:
    start, end = START + timedelta(days=2), START + timedelta(days=9)
    result = backtest.backtest(
        {"m:1": model}, rows, start, end, review_budget_per_day=5, thresholds={"m:1": LIMITS}
    )
    window = backtest.in_range(rows, start, end)
    y = window["is_fraud"].to_numpy()
    verdicts = by_hand(predict_proba(model, window), window, LIMITS)
    m = result.models["m:1"]
    expected = expected_report(verdicts, y)
    assert_report(m.policy, expected)
    assert m.decisions == expected["decisions"]
    assert m.flagged == expected["decisions"]["review"] + expected["decisions"]["decline"]
    assert result.rules_unmeasured == {}
    per_day = Counter()
    for day in m.per_day:
        per_day.update(day["policy"]["decisions"])
    assert dict(per_day) == expected["decisions"]
    assert result.table()["review"][0] == expected["decisions"]["review"]


def test_promotion_gate_reports_each_models_policy(rows, model) -> None:
    weak = CatBoostClassifier(iterations=2, depth=2, random_seed=1, verbose=0).fit(
        to_model_input(rows, ["amount"], [], label=rows["is_fraud"].cast(pl.Int8).to_numpy())
    )
    champion_limits = Thresholds(review=0.3, decline=0.95)
    decision = promotion.run_gate(
        rows,
        model,
        weak,
        challenger_tag="m:2",
        champion_tag="m:1",
        challenger_thresholds=LIMITS.to_dict(),
        champion_thresholds=champion_limits,
    )
    y = rows["is_fraud"].to_numpy()
    assert_report(
        decision.challenger_policy,
        expected_report(by_hand(predict_proba(model, rows), rows, LIMITS), y),
    )
    assert_report(
        decision.champion_policy,
        expected_report(by_hand(predict_proba(weak, rows), rows, champion_limits), y),
    )
    assert (
        decision.to_dict()["challenger_policy"]["decisions"]
        == (decision.challenger_policy["decisions"])
    )
