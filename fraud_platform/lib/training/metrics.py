"""Ranking and review-budget metrics of scored, labelled samples (pure numpy).

No scikit-learn at run time: ``roc_auc`` and ``average_precision`` follow scikit-learn's
definitions exactly (``roc_auc_score`` and ``average_precision_score``, ties included); the unit
tests hold them to it.

* **Daily review budget**: analysts review ``review_budget_per_day`` transactions per day. Each
  UTC day (of ``event_time``), that day's top-k scores are reviewed. Ties at the k-th place are
  broken by input order (stable sort), so the result is deterministic.

Undefined metrics (AUC with one class, AP without positives) are ``nan`` in numpy and ``None``
after ``json_safe``. The evaluation report built on them (thresholds, cost, the decision
policy's outcome) is ``evaluation.py``.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# input normalisation


def as_numpy(values: Any) -> np.ndarray:
    """numpy view of a numpy array, a polars/pandas Series or a sequence (no polars import)."""
    if isinstance(values, np.ndarray):
        return values
    to_numpy = getattr(values, "to_numpy", None)
    if callable(to_numpy):
        return np.asarray(to_numpy())
    return np.asarray(values)


def labels_scores(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = as_numpy(y_true)
    s = as_numpy(scores).astype(np.float64, copy=False).ravel()
    if y.dtype != np.bool_:
        if y.dtype == object or not np.all(np.isin(y, (0, 1))):
            raise ValueError("y_true must be boolean or 0/1 (no nulls)")
        y = y.astype(bool)
    y = y.ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true has {y.shape[0]} values but scores has {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return y, s


def day_index(event_time: Any, n: int) -> np.ndarray:
    """UTC day number (days since 1970-01-01) of each event time."""
    values = as_numpy(event_time)
    if values.dtype == object:
        # Python datetimes/dates (aware datetimes are converted to UTC first).
        def to_day(v: Any) -> int:
            if isinstance(v, datetime):
                if v.tzinfo is not None:
                    v = v.astimezone(UTC).replace(tzinfo=None)
                return (v.date() - date(1970, 1, 1)).days
            if isinstance(v, date):
                return (v - date(1970, 1, 1)).days
            raise ValueError(f"event_time values must be datetimes, got {type(v).__name__}")

        days = np.fromiter((to_day(v) for v in values), dtype=np.int64, count=len(values))
    elif np.issubdtype(values.dtype, np.datetime64):
        if np.isnat(values).any():
            raise ValueError("event_time contains nulls")
        days = values.astype("datetime64[D]").astype(np.int64)
    else:
        raise ValueError(f"event_time must be datetimes, got dtype {values.dtype}")
    if days.shape[0] != n:
        raise ValueError(f"event_time has {days.shape[0]} values, expected {n}")
    return days


# ---------------------------------------------------------------------------------------------
# curves and ranking metrics


def binary_clf_curve(
    y_true: Any, scores: Any, sample_weight: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False/true positive counts at each distinct threshold, thresholds in decreasing order.

    At threshold ``thresholds[i]`` everything with ``score >= thresholds[i]`` is flagged;
    ``fps[i]`` / ``tps[i]`` count the flagged negatives / positives (sums of their
    ``sample_weight`` when given: a downsampled set's rows stand for 1/rate rows each).
    """
    y, s = labels_scores(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    distinct = np.flatnonzero(np.diff(s_sorted))
    last = np.r_[distinct, s_sorted.size - 1] if s_sorted.size else np.array([], dtype=np.int64)
    if sample_weight is not None:
        w_sorted = as_numpy(sample_weight).astype(np.float64)[order]
        tps_w = np.cumsum(w_sorted * y_sorted)[last]
        return np.cumsum(w_sorted * ~y_sorted)[last], tps_w, s_sorted[last]
    tps = np.cumsum(y_sorted, dtype=np.int64)[last]
    fps = (last + 1) - tps
    return fps, tps, s_sorted[last]


def roc_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) from (0, 0) at threshold +inf; nan rates if a class is absent."""
    fps, tps, thresholds = binary_clf_curve(y_true, scores)
    fps = np.r_[0, fps]
    tps = np.r_[0, tps]
    n_neg = fps[-1]
    n_pos = tps[-1]
    fpr = fps / n_neg if n_neg > 0 else np.full(fps.shape, np.nan)
    tpr = tps / n_pos if n_pos > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def precision_recall_curve(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) by decreasing threshold, from recall 0, precision 1."""
    fps, tps, thresholds = binary_clf_curve(y_true, scores)
    n_pos = tps[-1] if tps.size else 0
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / n_pos if n_pos > 0 else np.full(tps.shape, np.nan)
    return np.r_[1.0, precision], np.r_[0.0, recall], np.r_[np.inf, thresholds]


def roc_auc(y_true: Any, scores: Any) -> float:
    """Area under the ROC curve via the rank statistic (Mann-Whitney U, ties count 1/2).

    Equals scikit-learn's ``roc_auc_score``; ``nan`` when only one class is present.
    """
    y, s = labels_scores(y_true, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    before = np.cumsum(counts) - counts  # how many values are strictly smaller
    avg_rank = before + (counts + 1) / 2.0  # 1-based average rank of each distinct value
    rank_sum_pos = float(avg_rank[inverse][y].sum())
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(y_true: Any, scores: Any, sample_weight: Any = None) -> float:
    """Step-wise area under the precision-recall curve: sum_k (R_k - R_{k-1}) * P_k.

    Same definition as scikit-learn's ``average_precision_score`` (no interpolation, tied scores
    form one threshold, rows counted by ``sample_weight`` when given); ``nan`` without positives.
    """
    fps, tps, _ = binary_clf_curve(y_true, scores, sample_weight)
    if tps.size == 0 or tps[-1] == 0:
        return float("nan")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(max(0.0, np.sum(np.diff(np.r_[0.0, recall]) * precision)))


def recall_at_fpr(y_true: Any, scores: Any, fpr_target: float) -> tuple[float, float]:
    """Highest recall whose false-positive rate is <= ``fpr_target``, and its threshold.

    The threshold is +inf (flag nothing) when even the top score exceeds the target.
    """
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return float("nan"), float("nan")
    ok = np.flatnonzero(fpr <= fpr_target)  # fpr is non-decreasing: the last ok index is best
    best = ok[-1]
    return float(tpr[best]), float(thresholds[best])


# ---------------------------------------------------------------------------------------------
# daily review budget and per-day metrics


def review_budget_mask(scores: Any, event_time: Any, review_budget_per_day: int) -> np.ndarray:
    """True for the transactions reviewed under a daily budget (each UTC day's top-k scores)."""
    s = as_numpy(scores).astype(np.float64, copy=False).ravel()
    return budget_mask(s, day_index(event_time, s.size), review_budget_per_day)


def budget_mask(s: np.ndarray, days: np.ndarray, review_budget_per_day: int) -> np.ndarray:
    """``review_budget_mask`` on aligned numpy scores and ``day_index`` values."""
    if review_budget_per_day < 0:
        raise ValueError("review_budget_per_day must be >= 0")
    order = np.lexsort((-s, days))  # by day, then score descending; stable on ties
    sorted_days = days[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_days)) + 1] if s.size else np.array([0])
    group_start = np.repeat(starts, np.diff(np.r_[starts, s.size]))
    rank_in_day = np.arange(s.size) - group_start
    mask = np.zeros(s.size, dtype=bool)
    mask[order] = rank_in_day < review_budget_per_day
    return mask


def safe_div(num: float, den: float) -> float:
    return float(num) / float(den) if den else float("nan")


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, nan/inf to None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sample_metrics(
    y: np.ndarray, s: np.ndarray, days: np.ndarray, review_budget_per_day: int
) -> dict[str, Any]:
    """Ranking and daily-review-budget metrics of one labelled sample (``nan`` where undefined).

    ``y`` bool labels, ``s`` scores and ``days`` UTC day indexes (``day_index``), aligned. The
    one implementation behind ``metrics_by_day``, the promotion gate and backtests.
    """
    reviewed = budget_mask(s, days, review_budget_per_day)
    caught = int((reviewed & y).sum())
    positives = int(y.sum())
    return {
        "labelled": int(y.size),
        "positives": positives,
        "auc_roc": roc_auc(y, s) if y.size else float("nan"),
        "average_precision": average_precision(y, s) if y.size else float("nan"),
        "reviewed_at_budget": int(reviewed.sum()),
        "frauds_caught_at_budget": caught,
        "precision_at_budget": safe_div(caught, int(reviewed.sum())),
        "recall_at_budget": safe_div(caught, positives),
    }


def metrics_by_day(
    y_true: Any, scores: Any, event_time: Any, review_budget_per_day: int
) -> list[dict[str, Any]]:
    """Ranking and budget metrics per UTC day (of ``event_time``), oldest day first.

    Each item: ``day`` (ISO date), ``rows``, ``positives``, ``auc_roc`` (``None`` with one
    class), ``average_precision`` and ``recall_at_budget`` (``None`` without fraud). The budget
    is the same daily top-k review as ``review_budget_mask``.
    """
    y, s = labels_scores(y_true, scores)
    days = day_index(event_time, y.size)
    out = []
    for day in np.unique(days).tolist():
        sel = days == day
        found = sample_metrics(y[sel], s[sel], days[sel], review_budget_per_day)
        out.append(
            {
                "day": day_iso(day),
                "rows": found["labelled"],
                **{k: found[k] for k in _DAILY_KEYS},
            }
        )
    return json_safe(out)


_DAILY_KEYS = ("positives", "auc_roc", "average_precision", "recall_at_budget")


def day_iso(day: int) -> str:
    """The ISO date of a ``day_index`` value (days since 1970-01-01, UTC)."""
    return date.fromordinal(date(1970, 1, 1).toordinal() + int(day)).isoformat()


__all__ = [
    "as_numpy",
    "average_precision",
    "binary_clf_curve",
    "budget_mask",
    "day_index",
    "day_iso",
    "json_safe",
    "labels_scores",
    "metrics_by_day",
    "precision_recall_curve",
    "recall_at_fpr",
    "review_budget_mask",
    "roc_auc",
    "roc_curve",
    "safe_div",
    "sample_metrics",
]
