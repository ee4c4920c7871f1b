"""The decision policy: how a model score and a transaction become approve, review or decline.

This module is the one definition of the policy. The scoring service (``scoring.ScoringModel``),
the offline evaluation (``training.evaluation``), the promotion gate (``training.promotion``)
and backtests (``training.backtest``) all decide through ``apply_policy``, so the policy
measured offline is the policy in service. Pure Python: no Dagster, no BentoML, no numpy.

decision = ``most_severe``(model decision, the action of every rule that fires)

* **Model decision** (``decide``): ``score >= decline`` -> decline, ``score >= review`` ->
  review, else approve. Both bounds are inclusive; ``Thresholds`` enforces
  ``0 <= review <= decline <= 1``.
* **Severity**: approve < review < decline (``DECISIONS``). A rule can only make a decision
  more severe, never approve what the model flagged.
* **Rules** (``default_rules``; the limits are ``RuleConfig`` fields). A rule reads the
  transaction and its model row (request-time + looked-up features: ``RuleInput``), and names
  the columns it reads (``Rule.reads``), so offline rows (training set, backtest rows) are
  judged with the same code (``rule_inputs``):

  | rule                                          | action  | fires when                      |
  |-----------------------------------------------|---------|---------------------------------|
  | large_amount_new_device_after_password_change | decline | amount > 1,000 from a device    |
  |                                               |         | new to the user, < 60 min after |
  |                                               |         | a password change               |
  | card_testing_burst                            | review  | >= 5 small card txns in 1 h     |
  | withdrawal_after_twofa_disabled               | review  | withdrawal < 60 min after 2FA   |
  |                                               |         | was disabled                    |
  | degraded_large_amount                         | review  | a degraded answer above its     |
  |                                               |         | channel's limit (below)         |

**Degraded mode.** An answer is degraded when the online features could not be read (Redis
down or timing out) or a feature group has no row, or only one older than its TTL (stale
values are not served; groups where "no row" is information, such as a device new to the
user, do not count). The model then scores with what it has (the request features alone when
Redis is down), a less informed score. The policy for such an answer, per channel and amount
(in the transaction's currency):

  | channel                                  | amount  | decision                        |
  |------------------------------------------|---------|---------------------------------|
  | withdrawal, p2p (money leaves)           | > 200   | review at least                 |
  | withdrawal, p2p                          | <= 200  | the model's and the rules'      |
  | card_present, ecommerce, deposit, other  | > 500   | review at least                 |
  | card_present, ecommerce, deposit, other  | <= 500  | the model's and the rules'      |

The limits are ``RuleConfig.degraded_money_out_review_amount`` (200) and
``RuleConfig.degraded_review_amount`` (500); the rule is ``degraded_large_amount``. "At
least": the model's decision and the other rules still apply, and the most severe wins.

Nothing is declined silently: the degraded policy itself never declines (a missing feature is
an outage on our side, not evidence of fraud), so a degraded transaction is declined only by
the model's score or a named rule; the answer carries that reason (the rule's name, or the
model's SHAP contributions, computed for every flagged answer with the service's
``explain="flagged"``) together with ``degraded`` and ``degraded_reason``.

Offline rows (training set, backtests) are point-in-time rows of a healthy store: they are
never degraded, so the degraded branch is tested on the service, not measured by evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Decision = Literal["approve", "review", "decline"]
DECISIONS: tuple[Decision, ...] = ("approve", "review", "decline")  # by increasing severity
_SEVERITY = {name: rank for rank, name in enumerate(DECISIONS)}
MONEY_OUT_CHANNELS: frozenset[str] = frozenset({"withdrawal", "p2p"})
# Columns every row the policy judges must have: the contract fields rules always read.
REQUIRED_COLUMNS: tuple[str, ...] = ("amount", "channel")


# ---------------------------------------------------------------------------------------------
# thresholds and the model's decision


@dataclass(frozen=True)
class Thresholds:
    """``score >= decline`` declines, ``score >= review`` sends to review."""

    review: float
    decline: float

    def __post_init__(self) -> None:
        for name in ("review", "decline"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name!r} must be a number in [0, 1], got {value!r}")
        if self.decline < self.review:
            raise ValueError(
                f"decline threshold {self.decline} is below review threshold {self.review}"
            )

    @classmethod
    def of(cls, value: Thresholds | Mapping[str, Any]) -> Thresholds:
        if isinstance(value, Thresholds):
            return value
        missing = {"review", "decline"} - set(value)
        if missing:
            raise ValueError(f"thresholds need 'review' and 'decline'; missing {sorted(missing)}")
        return cls(review=float(value["review"]), decline=float(value["decline"]))

    def to_dict(self) -> dict[str, float]:
        return {"review": float(self.review), "decline": float(self.decline)}


def decide(score: float, thresholds: Thresholds | Mapping[str, Any]) -> Decision:
    """The model's decision for ``score``: decline, review or approve."""
    limits = Thresholds.of(thresholds)
    if score >= limits.decline:
        return "decline"
    if score >= limits.review:
        return "review"
    return "approve"


def most_severe(*decisions: Decision) -> Decision:
    return max(decisions, key=_SEVERITY.__getitem__)


# ---------------------------------------------------------------------------------------------
# rules


@dataclass(frozen=True)
class RuleInput:
    """What a rule sees: the transaction, the model row (request + looked-up features), and
    whether the online features were missing (a degraded answer)."""

    txn: Mapping[str, Any]
    row: Mapping[str, Any]
    degraded: bool = False


@dataclass(frozen=True)
class Rule:
    name: str
    action: Literal["review", "decline"]
    description: str
    predicate: Callable[[RuleInput], bool]
    reads: tuple[str, ...] = ()  # the columns the predicate reads (for offline rows)

    def fires(self, facts: RuleInput) -> bool:
        return bool(self.predicate(facts))


@dataclass(frozen=True)
class RuleConfig:
    """The limits the default rules use (amounts are in the transaction's currency)."""

    hard_limit_amount: float = 1_000.0
    recent_password_change_minutes: float = 60.0
    card_testing_small_txn_count_1h: int = 5
    recent_twofa_disabled_minutes: float = 60.0
    degraded_review_amount: float = 500.0
    degraded_money_out_review_amount: float = 200.0

    def degraded_limit(self, channel: str | None) -> float:
        """Above this amount a degraded answer on ``channel`` goes to review at least."""
        if channel in MONEY_OUT_CHANNELS:
            return self.degraded_money_out_review_amount
        return self.degraded_review_amount


def _within(value: Any, minutes: float) -> bool:
    return value is not None and 0.0 <= value < minutes


def default_rules(config: RuleConfig | None = None) -> tuple[Rule, ...]:
    """Hard rules on top of the model. Each needs only the model row, so offline == online."""
    c = config or RuleConfig()
    money_out = "/".join(sorted(MONEY_OUT_CHANNELS))
    return (
        Rule(
            name="large_amount_new_device_after_password_change",
            action="decline",
            description=(
                f"amount > {c.hard_limit_amount:g} from a device new to the user, less than "
                f"{c.recent_password_change_minutes:g} min after a password change"
            ),
            predicate=lambda f: (
                f.row["amount"] > c.hard_limit_amount
                and f.row.get("is_new_device_for_user") == 1
                and _within(
                    f.row.get("minutes_since_password_change"), c.recent_password_change_minutes
                )
            ),
            reads=("amount", "is_new_device_for_user", "minutes_since_password_change"),
        ),
        Rule(
            name="card_testing_burst",
            action="review",
            description=(
                f"{c.card_testing_small_txn_count_1h} or more small transactions on the card in "
                "the last hour"
            ),
            predicate=lambda f: (
                (f.row.get("card_small_txn_count_1h") or 0) >= c.card_testing_small_txn_count_1h
            ),
            reads=("card_small_txn_count_1h",),
        ),
        Rule(
            name="withdrawal_after_twofa_disabled",
            action="review",
            description=(
                f"withdrawal less than {c.recent_twofa_disabled_minutes:g} min after 2FA was "
                "disabled"
            ),
            predicate=lambda f: (
                f.txn.get("channel") == "withdrawal"
                and _within(
                    f.row.get("minutes_since_twofa_disabled"), c.recent_twofa_disabled_minutes
                )
            ),
            reads=("channel", "minutes_since_twofa_disabled"),
        ),
        Rule(
            name="degraded_large_amount",
            action="review",
            description=(
                f"scored without (fresh) online features, amount > "
                f"{c.degraded_money_out_review_amount:g} on {money_out} or > "
                f"{c.degraded_review_amount:g} on other channels"
            ),
            predicate=lambda f: (
                f.degraded and f.row["amount"] > c.degraded_limit(f.txn.get("channel"))
            ),
            reads=("amount", "channel"),
        ),
    )


DEFAULT_RULES: tuple[Rule, ...] = default_rules()


# ---------------------------------------------------------------------------------------------
# the policy's decision


@dataclass(frozen=True)
class Verdict:
    """The policy's answer for one transaction."""

    decision: Decision
    model_decision: Decision
    hits: tuple[Rule, ...] = ()

    @property
    def rule_hits(self) -> list[str]:
        return [rule.name for rule in self.hits]


def apply_policy(
    score: float,
    facts: RuleInput,
    thresholds: Thresholds | Mapping[str, Any],
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> Verdict:
    """The decision for one scored transaction: the most severe of the model's decision and
    the actions of the rules that fire."""
    model_decision = decide(score, thresholds)
    hits = tuple(rule for rule in rules if rule.fires(facts))
    return Verdict(most_severe(model_decision, *(r.action for r in hits)), model_decision, hits)


def apply_policy_many(
    scores: Iterable[float],
    facts: Sequence[RuleInput],
    thresholds: Thresholds | Mapping[str, Any],
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> list[Verdict]:
    """``apply_policy`` row by row over aligned scores and rule inputs."""
    limits = Thresholds.of(thresholds)
    scores = list(scores)
    if len(scores) != len(facts):
        raise ValueError(f"{len(scores)} scores but {len(facts)} rule inputs")
    return [apply_policy(float(s), f, limits, rules) for s, f in zip(scores, facts, strict=True)]


# ---------------------------------------------------------------------------------------------
# offline rows


def rule_columns(rules: Sequence[Rule] = DEFAULT_RULES) -> tuple[str, ...]:
    """Every column the rules read, the required ones first."""
    names = list(REQUIRED_COLUMNS)
    for rule in rules:
        names += [c for c in rule.reads if c not in names]
    return tuple(names)


def unmeasured_rules(
    columns: Iterable[str], rules: Sequence[Rule] = DEFAULT_RULES
) -> dict[str, list[str]]:
    """Rule name -> the columns it reads that ``columns`` lack (such a rule never fires on
    those rows, so its share of the decisions is not measured there)."""
    present = set(columns)
    return {
        rule.name: missing
        for rule in rules
        if (missing := [c for c in rule.reads if c not in present])
    }


def rule_inputs(frame: Any, rules: Sequence[Rule] = DEFAULT_RULES) -> list[RuleInput]:
    """The ``RuleInput`` of each row of a model frame (a polars DataFrame of point-in-time rows:
    the training set, backtest rows), as the service builds it for a request: the row is both
    the transaction and its model row, and it is not degraded. A column a rule reads that the
    frame lacks is null (see ``unmeasured_rules``); ``amount`` and ``channel`` are required."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the policy needs columns {missing} that the rows lack")
    present = [c for c in rule_columns(rules) if c in frame.columns]
    return [RuleInput(txn=row, row=row) for row in frame.select(present).iter_rows(named=True)]


__all__ = [
    "DECISIONS",
    "DEFAULT_RULES",
    "MONEY_OUT_CHANNELS",
    "Decision",
    "Rule",
    "RuleConfig",
    "RuleInput",
    "Thresholds",
    "Verdict",
    "apply_policy",
    "apply_policy_many",
    "decide",
    "default_rules",
    "most_severe",
    "rule_columns",
    "rule_inputs",
    "unmeasured_rules",
]
