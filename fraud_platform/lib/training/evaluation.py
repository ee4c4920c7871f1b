"""Offline evaluation of a fraud model: thresholds, the evaluation report, the policy's outcome.

Operating model the report describes (the metrics themselves are ``metrics.py``):

* **Daily review budget**: analysts review ``review_budget_per_day`` transactions per day, each
  UTC day's top-k scores (``metrics.review_budget_mask``).
* **Thresholds** (``policy.Thresholds``, chosen by ``choose_thresholds`` on the validation
  split): ``score >= review`` sends a transaction to review; ``score >= decline`` declines it
  outright (the model's decision, ``policy.decide``).
* **The served policy** (``policy.apply_policy``): the model's decision made more severe by the
  business rules, on the same rows, read through ``policy.rule_inputs``. ``Evaluation.policy``
  and ``policy_report`` give its decision counts, rule hits, and the precision / recall of what
  it flags and declines: what the service would have done on the test period.
* **Cost**: every missed fraud costs ``cost_missed_fraud``; every flagged transaction (reviewed or
  declined) costs ``cost_review``.

Undefined metrics (AUC with one class, AP without positives) are ``nan`` in numpy and ``None`` in
``to_dict()``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fraud_platform.lib.serving.policy import (
    DECISIONS,
    DEFAULT_RULES,
    Rule,
    Thresholds,
    Verdict,
    apply_policy_many,
    decide,
    rule_inputs,
    unmeasured_rules,
)
from fraud_platform.lib.training.metrics import (
    as_numpy,
    average_precision,
    binary_clf_curve,
    budget_mask,
    day_index,
    json_safe,
    labels_scores,
    recall_at_fpr,
    roc_auc,
    safe_div,
)

MISSING_GROUP = "__missing__"


def _groups(values: Any, n: int) -> np.ndarray:
    """Group labels as a str object array; nulls become ``__missing__``."""
    arr = as_numpy(values).ravel()
    if arr.shape[0] != n:
        raise ValueError(f"group column has {arr.shape[0]} values, expected {n}")
    return np.array(
        [
            MISSING_GROUP if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            for v in arr
        ],
        dtype=object,
    )


def choose_thresholds(
    y_true: Any,
    scores: Any,
    *,
    review_rate: float,
    decline_precision: float = 0.9,
) -> Thresholds:
    """Pick operating thresholds on a labelled sample (the validation set, ideally).

    * review: the score at which ``review_rate`` of the traffic is flagged (``score >= review``;
      ties at the cut can flag a little more).
    * decline: the lowest score threshold whose precision (frauds among ``score >= t``) is at
      least ``decline_precision``; if none reaches it, ``max(review, 0.99 quantile)``.
    * ``decline >= review`` always.
    """
    if not 0.0 < review_rate <= 1.0:
        raise ValueError(f"review_rate must be in (0, 1], got {review_rate}")
    if not 0.0 < decline_precision <= 1.0:
        raise ValueError(f"decline_precision must be in (0, 1], got {decline_precision}")
    y, s = labels_scores(y_true, scores)
    if s.size == 0:
        raise ValueError("choose_thresholds needs at least one score")
    s_desc = np.sort(s)[::-1]
    k = max(1, math.ceil(review_rate * s.size))
    review = float(s_desc[k - 1])

    fps, tps, thresholds = binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    ok = np.flatnonzero(precision >= decline_precision)
    if tps[-1] > 0 and ok.size:
        decline = float(thresholds[ok[-1]])  # thresholds decrease: the last ok one is the lowest
    else:
        decline = max(review, float(np.quantile(s, 0.99)))
    return Thresholds(review=review, decline=max(decline, review))


@dataclass(frozen=True)
class Evaluation:
    n: int
    positives: int
    negatives: int
    days: int
    auc_roc: float
    average_precision: float
    # daily review budget
    review_budget_per_day: int
    reviewed_at_budget: int
    frauds_caught_at_budget: int
    precision_at_budget: float
    recall_at_budget: float
    # fixed false-positive rate
    fpr_target: float
    recall_at_fpr: float
    threshold_at_fpr: float
    # thresholds
    thresholds: Thresholds
    thresholds_source: str  # "given" | "derived_from_eval_data"
    flagged_rate_at_review: float
    precision_at_review: float
    recall_at_review: float
    declined: int
    precision_at_decline: float
    recall_at_decline: float
    # cost
    cost_missed_fraud: float
    cost_review: float
    expected_cost_at_thresholds: float
    expected_cost_at_budget: float
    cost_without_model: float
    # slices
    per_fraud_type: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_channel: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the served policy (rules applied) on the same rows; None when no rows were given
    policy: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (plain floats/ints/str, ``None`` for undefined metrics)."""
        return json_safe(asdict(self))


def _cost(missed: int, flagged: int, cost_missed_fraud: float, cost_review: float) -> float:
    return float(missed * cost_missed_fraud + flagged * cost_review)


def evaluate(
    y_true: Any,
    scores: Any,
    *,
    event_time: Any,
    fraud_type: Any,
    channel: Any,
    review_budget_per_day: int,
    fpr_target: float = 0.01,
    cost_missed_fraud: float = 100.0,
    cost_review: float = 2.0,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    decline_precision: float = 0.9,
    policy_rows: Any = None,
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> Evaluation:
    """All offline metrics of one scored, labelled sample (normally the test split).

    ``thresholds`` should come from ``choose_thresholds`` on the validation split. Without them,
    they are derived from this sample (review rate = the share the daily budget reviews here),
    which is optimistic; ``thresholds_source`` records which happened. The ``*_at_review`` /
    ``*_at_decline`` figures are the model's decision alone.

    ``policy_rows``: the sample's rows (a polars frame aligned with ``scores``, with the
    request-time features the rules read); with them, ``policy`` reports the served policy's
    decisions (``policy_report``).
    """
    y, s = labels_scores(y_true, scores)
    n = int(y.size)
    if n == 0:
        raise ValueError("evaluate needs at least one row")
    n_pos = int(y.sum())
    days = day_index(event_time, n)
    fraud_types = _groups(fraud_type, n)
    channels = _groups(channel, n)

    reviewed = budget_mask(s, days, review_budget_per_day)
    caught_budget = int((reviewed & y).sum())

    fpr_recall, fpr_threshold = recall_at_fpr(y, s, fpr_target)

    source = "given"
    if thresholds is None:
        source = "derived_from_eval_data"
        review_rate = max(int(reviewed.sum()), 1) / n
        thresholds = choose_thresholds(
            y, s, review_rate=review_rate, decline_precision=decline_precision
        )
    thresholds = Thresholds.of(thresholds)
    policy = None
    if policy_rows is None:
        model_decisions = np.array([decide(x, thresholds) for x in s.tolist()], dtype=object)
    else:
        if len(policy_rows) != n:
            raise ValueError(f"policy_rows has {len(policy_rows)} rows, expected {n}")
        verdicts = apply_policy_many(s, rule_inputs(policy_rows, rules), thresholds, rules)
        model_decisions = np.array([v.model_decision for v in verdicts], dtype=object)
        policy = policy_report(verdicts, y, rules=rules)
        policy["rules_unmeasured"] = unmeasured_rules(policy_rows.columns, rules)
    flagged = model_decisions != "approve"
    declined = model_decisions == "decline"
    caught_flagged = int((flagged & y).sum())
    caught_declined = int((declined & y).sum())

    per_fraud_type: dict[str, dict[str, Any]] = {}
    for name in sorted(set(fraud_types[y].tolist())):
        sel = y & (fraud_types == name)
        count = int(sel.sum())
        per_fraud_type[name] = {
            "count": count,
            "recall_at_review": safe_div(int((sel & flagged).sum()), count),
            "recall_at_budget": safe_div(int((sel & reviewed).sum()), count),
        }

    per_channel: dict[str, dict[str, Any]] = {}
    for name in sorted(set(channels.tolist())):
        sel = channels == name
        y_c, s_c = y[sel], s[sel]
        per_channel[name] = {
            "count": int(sel.sum()),
            "positives": int(y_c.sum()),
            "auc_roc": roc_auc(y_c, s_c),
            "average_precision": average_precision(y_c, s_c),
            "recall_at_review": safe_div(int((y_c & flagged[sel]).sum()), int(y_c.sum())),
        }

    return Evaluation(
        n=n,
        positives=n_pos,
        negatives=n - n_pos,
        days=int(np.unique(days).size),
        auc_roc=roc_auc(y, s),
        average_precision=average_precision(y, s),
        review_budget_per_day=int(review_budget_per_day),
        reviewed_at_budget=int(reviewed.sum()),
        frauds_caught_at_budget=caught_budget,
        precision_at_budget=safe_div(caught_budget, int(reviewed.sum())),
        recall_at_budget=safe_div(caught_budget, n_pos),
        fpr_target=float(fpr_target),
        recall_at_fpr=fpr_recall,
        threshold_at_fpr=fpr_threshold,
        thresholds=thresholds,
        thresholds_source=source,
        flagged_rate_at_review=float(flagged.mean()),
        precision_at_review=safe_div(caught_flagged, int(flagged.sum())),
        recall_at_review=safe_div(caught_flagged, n_pos),
        declined=int(declined.sum()),
        precision_at_decline=safe_div(caught_declined, int(declined.sum())),
        recall_at_decline=safe_div(caught_declined, n_pos),
        cost_missed_fraud=float(cost_missed_fraud),
        cost_review=float(cost_review),
        expected_cost_at_thresholds=_cost(
            n_pos - caught_flagged, int(flagged.sum()), cost_missed_fraud, cost_review
        ),
        expected_cost_at_budget=_cost(
            n_pos - caught_budget, int(reviewed.sum()), cost_missed_fraud, cost_review
        ),
        cost_without_model=_cost(n_pos, 0, cost_missed_fraud, cost_review),
        per_fraud_type=per_fraud_type,
        per_channel=per_channel,
        policy=policy,
    )


def policy_report(
    verdicts: Sequence[Verdict],
    y: np.ndarray | None = None,
    known: np.ndarray | None = None,
    *,
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> dict[str, Any]:
    """What the served policy decided on a set of rows (``policy.apply_policy`` verdicts).

    ``decisions`` (approve / review / decline counts), ``flagged`` (review or decline),
    ``declined``, ``rule_hits`` per rule and ``raised_by_rules`` (rows whose decision the rules
    made more severe than the model's). With labels ``y`` (bool, aligned; ``known`` masks the
    rows whose label is known): ``labelled``, ``positives``, and precision / recall of the
    flagged and of the declined rows (``nan`` where undefined).
    """
    decisions = np.array([v.decision for v in verdicts], dtype=object)
    flagged = decisions != "approve"
    declined = decisions == "decline"
    hits = Counter(name for v in verdicts for name in v.rule_hits)
    report: dict[str, Any] = {
        "rows": len(verdicts),
        "decisions": {d: int((decisions == d).sum()) for d in DECISIONS},
        "flagged": int(flagged.sum()),
        "declined": int(declined.sum()),
        "rule_hits": {rule.name: hits.get(rule.name, 0) for rule in rules},
        "raised_by_rules": sum(v.decision != v.model_decision for v in verdicts),
    }
    if y is None:
        return report
    labelled = np.ones(len(verdicts), dtype=bool) if known is None else known
    y = np.asarray(y, dtype=bool) & labelled
    flagged, declined = flagged & labelled, declined & labelled
    positives = int(y.sum())
    caught, caught_declined = int((flagged & y).sum()), int((declined & y).sum())
    return {
        **report,
        "labelled": int(labelled.sum()),
        "positives": positives,
        "precision_flagged": safe_div(caught, int(flagged.sum())),
        "recall_flagged": safe_div(caught, positives),
        "precision_declined": safe_div(caught_declined, int(declined.sum())),
        "recall_declined": safe_div(caught_declined, positives),
    }


__all__ = [
    "MISSING_GROUP",
    "Evaluation",
    "choose_thresholds",
    "evaluate",
    "policy_report",
]
