"""Realized performance: how a day's decisions turned out, with the labels known so far.

A decision's label is the latest label of its transaction with ``label_time <= as_of``. Labels
are late (chargebacks take days), so a transaction without a label counts as legitimate *so
far*, as training counts a matured unlabelled transaction; the figures of a recent day are
therefore provisional, and re-computing the day later (more labels known) moves them.
``label_coverage`` says how far the day is into the label-maturity window (0: labels cannot have
arrived yet, 1: matured, as training treats it).

Figures (``performance``), for one model's scores and decisions on the day's traffic:

* ``average_precision`` over all the day's decisions (None without a known fraud);
* precision / recall at the daily review budget: the top ``review_budget`` scores of the day are
  reviewed (ties by input order, as ``training.metrics.budget_mask``);
* the policy's outcome: ``frauds_caught`` (known frauds sent to review or declined) and their
  amount, ``frauds_approved`` and ``money_lost`` (the amount of known frauds approved);
* the same per decision outcome (``by_decision``) and per channel (``by_channel``).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.serving.policy import DECISIONS
from fraud_platform.lib.training.metrics import average_precision, budget_mask, json_safe

DECISION_COLUMNS = ("transaction_id", "score", "decision", "channel", "amount")


def known_labels(labels: pl.DataFrame, as_of: datetime) -> pl.DataFrame:
    """The latest label per transaction with ``label_time <= as_of``: transaction_id,
    is_fraud, label_time."""
    return (
        labels.filter(pl.col("label_time") <= as_of)
        .sort("label_time")
        .unique(subset=["transaction_id"], keep="last", maintain_order=True)
        .select("transaction_id", "is_fraud", "label_time")
    )


def label_coverage(day: date, as_of: datetime, maturity_days: float) -> float:
    """Share of the label-maturity window elapsed since the end of ``day`` (0..1)."""
    end_of_day = datetime.combine(day + timedelta(days=1), time(), tzinfo=as_of.tzinfo)
    elapsed = (as_of - end_of_day).total_seconds() / 86_400
    return float(min(1.0, max(0.0, elapsed / maturity_days)))


def with_labels(decisions: pl.DataFrame, labels: pl.DataFrame) -> pl.DataFrame:
    """``decisions`` plus ``is_fraud`` (null: no label yet) from ``known_labels`` output."""
    missing = [c for c in DECISION_COLUMNS if c not in decisions.columns]
    if missing:
        raise ValueError(f"realized performance needs decision columns {missing}")
    return decisions.join(
        labels.select("transaction_id", "is_fraud"), on="transaction_id", how="left"
    )


def _outcome(y: np.ndarray, flagged: np.ndarray, amount: np.ndarray) -> dict[str, Any]:
    caught, approved = y & flagged, y & ~flagged
    return {
        "rows": int(y.size),
        "frauds": int(y.sum()),
        "frauds_caught": int(caught.sum()),
        "fraud_amount_caught": float(amount[caught].sum()),
        "frauds_approved": int(approved.sum()),
        "money_lost": float(amount[approved].sum()),
    }


def _ap(y: np.ndarray, s: np.ndarray) -> float | None:
    return json_safe(average_precision(y, s)) if y.any() else None


def performance(labelled: pl.DataFrame, review_budget: int) -> dict[str, Any]:
    """The figures of the module docstring for a ``with_labels`` frame (one model, one day)."""
    y = labelled["is_fraud"].fill_null(False).cast(pl.Boolean).to_numpy()
    s = labelled["score"].cast(pl.Float64).to_numpy()
    decision = np.asarray(labelled["decision"].to_list(), dtype=object)
    amount = labelled["amount"].cast(pl.Float64).fill_null(0.0).to_numpy()
    channel = np.asarray(labelled["channel"].to_list(), dtype=object)
    flagged = decision != "approve"
    reviewed = budget_mask(s, np.zeros(s.size, dtype=np.int64), review_budget)
    caught_at_budget = int((reviewed & y).sum())
    known = labelled["is_fraud"].is_not_null().to_numpy()
    result: dict[str, Any] = {
        "rows": int(s.size),
        "fraud_labels": int(y.sum()),
        "legit_labels": int((known & ~y).sum()),
        "unlabelled": int((~known).sum()),
        "average_precision": _ap(y, s),
        "review_budget": int(review_budget),
        "reviewed_at_budget": int(reviewed.sum()),
        "frauds_caught_at_budget": caught_at_budget,
        "precision_at_budget": caught_at_budget / int(reviewed.sum()) if reviewed.any() else None,
        "recall_at_budget": caught_at_budget / int(y.sum()) if y.any() else None,
        **{k: v for k, v in _outcome(y, flagged, amount).items() if k != "rows"},
        "by_decision": {
            d: {
                "rows": int((decision == d).sum()),
                "frauds": int((y & (decision == d)).sum()),
                "fraud_amount": float(amount[y & (decision == d)].sum()),
            }
            for d in DECISIONS
        },
        "by_channel": {
            c: {
                **_outcome(y[sel], flagged[sel], amount[sel]),
                "average_precision": _ap(y[sel], s[sel]),
            }
            for c in sorted({str(v) for v in channel})
            if (sel := channel == c).any()
        },
    }
    return json_safe(result)
