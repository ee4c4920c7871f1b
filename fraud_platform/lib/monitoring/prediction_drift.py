"""Prediction drift: the served scores and decisions of a day against the model's validation
period (what the model scored, and the policy decided, on the days its thresholds were chosen).

* **Score distribution**: two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``) and PSI
  (population stability index) on ``PSI_BINS`` bins cut at the reference's quantiles. Fraud
  scores pile up near 0, so many quantiles coincide: bins are the distinct edges.
* **Decision rates**: the approve / review / decline shares, their largest absolute change, a
  chi-square test of homogeneity on the counts, and PSI over the three decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from fraud_platform.lib.serving.policy import DECISIONS
from fraud_platform.lib.training.metrics import json_safe

PSI_BINS = 10
PSI_EPSILON = 1e-4


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """PSI of two proportion vectors (empty bins floored at ``PSI_EPSILON``)."""
    ref = np.clip(np.asarray(reference, dtype=float), PSI_EPSILON, None)
    cur = np.clip(np.asarray(current, dtype=float), PSI_EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def score_bins(reference: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges: the reference's distinct ``1/bins .. (bins-1)/bins`` quantiles."""
    quantiles = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(quantiles)


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of ``values`` per bin (``x <= edge`` falls in the lower bin)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)
    return counts / max(values.size, 1)


@dataclass(frozen=True)
class ScoreDrift:
    reference_rows: int
    current_rows: int
    ks_statistic: float
    ks_pvalue: float
    psi: float
    reference_mean: float
    current_mean: float
    reference_quantiles: dict[str, float]
    current_quantiles: dict[str, float]
    bin_edges: list[float]
    reference_shares: list[float]
    current_shares: list[float]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def _quantiles(values: np.ndarray) -> dict[str, float]:
    points = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
    return {name: float(np.quantile(values, q)) for name, q in points.items()}


def score_drift(reference: Iterable[float], current: Iterable[float]) -> ScoreDrift:
    """KS and PSI of the ``current`` scores against the ``reference`` scores."""
    from scipy.stats import ks_2samp

    ref = np.asarray(list(reference), dtype=float)
    cur = np.asarray(list(current), dtype=float)
    if ref.size == 0 or cur.size == 0:
        raise ValueError(f"score_drift needs scores on both sides ({ref.size} and {cur.size})")
    ks = ks_2samp(ref, cur)
    edges = score_bins(ref)
    ref_shares, cur_shares = bin_shares(ref, edges), bin_shares(cur, edges)
    return ScoreDrift(
        reference_rows=int(ref.size),
        current_rows=int(cur.size),
        ks_statistic=float(ks.statistic),
        ks_pvalue=float(ks.pvalue),
        psi=psi(ref_shares, cur_shares),
        reference_mean=float(ref.mean()),
        current_mean=float(cur.mean()),
        reference_quantiles=_quantiles(ref),
        current_quantiles=_quantiles(cur),
        bin_edges=[float(e) for e in edges],
        reference_shares=[float(s) for s in ref_shares],
        current_shares=[float(s) for s in cur_shares],
    )


def decision_counts(decisions: Iterable[str]) -> dict[str, int]:
    counts = dict.fromkeys(DECISIONS, 0)
    for decision in decisions:
        if decision not in counts:
            raise ValueError(f"unknown decision {decision!r} (one of {DECISIONS})")
        counts[decision] += 1
    return counts


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {d: (counts.get(d, 0) / total if total else 0.0) for d in DECISIONS}


@dataclass(frozen=True)
class DecisionRateDrift:
    reference_counts: dict[str, int]
    current_counts: dict[str, int]
    reference_shares: dict[str, float]
    current_shares: dict[str, float]
    share_change: dict[str, float]  # current - reference, per decision
    max_abs_share_change: float
    chi2_pvalue: float | None  # None when only one decision occurs on both sides
    psi: float

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def decision_rate_drift(
    reference: Mapping[str, int], current: Mapping[str, int]
) -> DecisionRateDrift:
    """Decision shares of ``current`` against ``reference`` (counts per decision)."""
    from scipy.stats import chi2_contingency

    ref_counts = {d: int(reference.get(d, 0)) for d in DECISIONS}
    cur_counts = {d: int(current.get(d, 0)) for d in DECISIONS}
    if not sum(ref_counts.values()) or not sum(cur_counts.values()):
        raise ValueError("decision_rate_drift needs decisions on both sides")
    ref_shares, cur_shares = shares(ref_counts), shares(cur_counts)
    change = {d: cur_shares[d] - ref_shares[d] for d in DECISIONS}
    table = np.array([[ref_counts[d], cur_counts[d]] for d in DECISIONS], dtype=float).T
    table = table[:, table.sum(axis=0) > 0]
    pvalue = float(chi2_contingency(table, correction=False).pvalue) if table.shape[1] > 1 else None
    return DecisionRateDrift(
        reference_counts=ref_counts,
        current_counts=cur_counts,
        reference_shares=ref_shares,
        current_shares=cur_shares,
        share_change=change,
        max_abs_share_change=max(abs(v) for v in change.values()),
        chi2_pvalue=pvalue,
        psi=psi(
            np.array([ref_shares[d] for d in DECISIONS]),
            np.array([cur_shares[d] for d in DECISIONS]),
        ),
    )
