"""Feature drift between two whylogs profiles: the training reference and served traffic.

whylogs' own scores (``whylogs.viz.drift.column_drift_algorithms.calculate_drift_scores``) live
under ``whylogs.viz``, which imports IPython unconditionally; IPython is not a dependency here,
so this module computes the same tests itself with scipy, from the profiles' sketches alone
(the raw rows are not needed), with whylogs' thresholds:

* numeric columns (a non-empty KLL distribution sketch): two-sample Kolmogorov-Smirnov from the
  two KLL sketches, as whylogs' ``KS`` algorithm does;
* categorical columns (strings, booleans, or listed in ``categorical``): chi-square test of
  homogeneity on the frequent-items counts (nulls are the category ``__missing__``, values the
  sketch did not keep ``__other__``);
* status from the p-value: ``p < 0.05`` DRIFT, ``p < 0.15`` POSSIBLE_DRIFT, else NO_DRIFT;
* a change in the null rate is tested too (chi-square on null / non-null counts) and the column
  takes the smaller p-value: a feature that goes missing in serving is drift;
* PSI (population stability index; < 0.1 stable, 0.1-0.25 moderate, > 0.25 large shift) on
  reference-quantile bins (numeric) or categories, nulls as their own bin.

On large samples p-values flag even tiny shifts; pass ``min_psi`` to require a minimum effect
size before a column counts as drifting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fraud_platform.lib.model.input import MISSING_CATEGORY
from fraud_platform.lib.monitoring.profiles import ProfileSummary
from fraud_platform.lib.training.metrics import json_safe

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

DRIFT = "DRIFT"
POSSIBLE_DRIFT = "POSSIBLE_DRIFT"
NO_DRIFT = "NO_DRIFT"
DRIFT_PVALUE = 0.05  # whylogs' KSTestConfig / ChiSquareConfig thresholds
POSSIBLE_DRIFT_PVALUE = 0.15
OTHER_CATEGORY = "__other__"
MAX_CATEGORIES = 50  # categories beyond the most frequent are pooled into __other__
PSI_BINS = 10
PSI_EPSILON = 1e-4
QUANTILE_GRID = 100  # quantiles per sketch when computing KS from profiles


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "numeric" | "categorical"
    algorithm: str  # "ks" | "chi-square"
    statistic: float | None
    pvalue: float | None  # the smaller of the distribution and null-rate p-values
    distribution_pvalue: float | None
    null_pvalue: float | None
    psi: float | None
    status: str
    reference_count: int
    current_count: int
    reference_null_rate: float | None
    current_null_rate: float | None
    reference_mean: float | None = None
    current_mean: float | None = None


@dataclass(frozen=True)
class DriftReport:
    columns: dict[str, ColumnDrift]
    reference_rows: int
    current_rows: int
    source: str = "profiles"  # what the report was computed from
    min_psi: float | None = None
    thresholds: dict[str, float] = field(
        default_factory=lambda: {DRIFT: DRIFT_PVALUE, POSSIBLE_DRIFT: POSSIBLE_DRIFT_PVALUE}
    )

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.status == DRIFT]

    @property
    def possible_drift_columns(self) -> list[str]:
        return [name for name, col in self.columns.items() if col.status == POSSIBLE_DRIFT]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "source": self.source,
                "reference_rows": self.reference_rows,
                "current_rows": self.current_rows,
                "thresholds": self.thresholds,
                "min_psi": self.min_psi,
                "drifted_columns": self.drifted_columns,
                "possible_drift_columns": self.possible_drift_columns,
                "share_drifted": self.share_drifted,
                "columns": {name: asdict(col) for name, col in self.columns.items()},
            }
        )


def drift_status(
    pvalue: float | None, psi: float | None = None, min_psi: float | None = None
) -> str:
    """whylogs' categories from a p-value; below ``min_psi`` a shift is too small to count."""
    if pvalue is None:
        return NO_DRIFT
    if min_psi is not None and psi is not None and psi < min_psi:
        return NO_DRIFT
    if pvalue < DRIFT_PVALUE:
        return DRIFT
    if pvalue < POSSIBLE_DRIFT_PVALUE:
        return POSSIBLE_DRIFT
    return NO_DRIFT


def _chi2_pvalue(table: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity on a 2 x K count table (columns with no counts dropped)."""
    from scipy.stats import chi2_contingency

    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    result = chi2_contingency(table, correction=False)
    return float(result.statistic), float(result.pvalue)


def _null_pvalue(ref_null: int, ref_n: int, cur_null: int, cur_n: int) -> float | None:
    if ref_null == 0 and cur_null == 0:
        return None
    table = np.array([[ref_null, ref_n - ref_null], [cur_null, cur_n - cur_null]], dtype=float)
    return _chi2_pvalue(table)[1]


def _psi(ref_props: np.ndarray, cur_props: np.ndarray) -> float:
    ref = np.clip(ref_props, PSI_EPSILON, None)
    cur = np.clip(cur_props, PSI_EPSILON, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _min_p(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _categorical_drift(
    name: str,
    ref_counts: Mapping[str, float],
    cur_counts: Mapping[str, float],
    min_psi: float | None,
) -> ColumnDrift:
    """Chi-square + PSI from category counts (nulls already counted as ``__missing__``)."""
    ref_total, cur_total = sum(ref_counts.values()), sum(cur_counts.values())
    combined: dict[str, float] = {}
    for counts in (ref_counts, cur_counts):
        for key, value in counts.items():
            combined[key] = combined.get(key, 0.0) + value
    kept = sorted(combined, key=lambda k: (-combined[k], k))[:MAX_CATEGORIES]
    kept_set = set(kept)

    def vector(counts: Mapping[str, float]) -> np.ndarray:
        other = sum(v for k, v in counts.items() if k not in kept_set)
        return np.array([counts.get(k, 0.0) for k in kept] + [other], dtype=float)

    ref_vec, cur_vec = vector(ref_counts), vector(cur_counts)
    statistic = dist_p = psi = None
    if ref_total and cur_total:
        statistic, dist_p = _chi2_pvalue(np.vstack([ref_vec, cur_vec]))
        psi = _psi(ref_vec / ref_total, cur_vec / cur_total)
    ref_null = ref_counts.get(MISSING_CATEGORY, 0.0)
    cur_null = cur_counts.get(MISSING_CATEGORY, 0.0)
    return ColumnDrift(
        column=name,
        kind="categorical",
        algorithm="chi-square",
        statistic=statistic,
        pvalue=dist_p,  # nulls are a category, so the null rate is part of this test
        distribution_pvalue=dist_p,
        null_pvalue=None,
        psi=psi,
        status=drift_status(dist_p, psi, min_psi),
        reference_count=int(ref_total),
        current_count=int(cur_total),
        reference_null_rate=_rate(int(ref_null), int(ref_total)),
        current_null_rate=_rate(int(cur_null), int(cur_total)),
    )


def _sketch_numeric_drift(
    name: str, ref_col: Any, cur_col: Any, min_psi: float | None
) -> ColumnDrift | None:
    """KS from two KLL sketches, the way whylogs' ``KS`` algorithm does it."""
    from scipy.stats import kstwo

    ref_dist, cur_dist = ref_col.get_metric("distribution"), cur_col.get_metric("distribution")
    if ref_dist is None or cur_dist is None:
        return None
    ref_k, cur_k = ref_dist.kll.value, cur_dist.kll.value
    ref_counts, cur_counts = ref_col.get_metric("counts"), cur_col.get_metric("counts")
    ref_total, cur_total = int(ref_counts.n.value), int(cur_counts.n.value)
    ref_n = 0 if ref_k.is_empty() else int(ref_k.get_n())
    cur_n = 0 if cur_k.is_empty() else int(cur_k.get_n())
    if ref_n == 0 and cur_n == 0:
        return None  # not a numeric column (e.g. strings)
    statistic = dist_p = psi = None
    if ref_n and cur_n:
        grid = list(np.linspace(0, 1, QUANTILE_GRID))
        points = sorted(set(ref_k.get_quantiles(grid)) | set(cur_k.get_quantiles(grid)))
        d = np.max(np.abs(np.array(ref_k.get_cdf(points)) - np.array(cur_k.get_cdf(points))))
        statistic = float(d)
        m, n = sorted((ref_n, cur_n), reverse=True)
        dist_p = float(kstwo.sf(statistic, int(round(m * n / (m + n)))))
        edges = sorted(set(ref_k.get_quantiles(list(np.linspace(0, 1, PSI_BINS + 1)[1:-1]))))
        ref_cdf = np.array(ref_k.get_cdf(edges))
        cur_cdf = np.array(cur_k.get_cdf(edges))
        ref_null, cur_null = ref_total - ref_n, cur_total - cur_n
        ref_props = np.r_[np.diff(np.r_[0.0, ref_cdf]) * ref_n, ref_null] / ref_total
        cur_props = np.r_[np.diff(np.r_[0.0, cur_cdf]) * cur_n, cur_null] / cur_total
        psi = _psi(ref_props, cur_props)
    else:
        dist_p = 0.0
    null_p = _null_pvalue(ref_total - ref_n, ref_total, cur_total - cur_n, cur_total)
    pvalue = _min_p(dist_p, null_p)
    return ColumnDrift(
        column=name,
        kind="numeric",
        algorithm="ks",
        statistic=statistic,
        pvalue=pvalue,
        distribution_pvalue=dist_p,
        null_pvalue=null_p,
        psi=psi,
        status=drift_status(pvalue, psi, min_psi),
        reference_count=ref_total,
        current_count=cur_total,
        reference_null_rate=_rate(ref_total - ref_n, ref_total),
        current_null_rate=_rate(cur_total - cur_n, cur_total),
        reference_mean=float(ref_dist.mean.value) if ref_n else None,
        current_mean=float(cur_dist.mean.value) if cur_n else None,
    )


def _sketch_category_counts(col: Any) -> dict[str, float]:
    counts = col.get_metric("counts")
    frequent = col.get_metric("frequent_items")
    items = frequent.to_summary_dict().get("frequent_strings", []) if frequent else []
    result = {str(i.value): float(i.est) for i in items}
    listed = sum(result.values())
    nulls = float(counts.null.value)
    if nulls:
        result[MISSING_CATEGORY] = nulls
    rest = float(counts.n.value) - nulls - listed  # values the sketch did not keep
    if rest > 0:
        result[OTHER_CATEGORY] = result.get(OTHER_CATEGORY, 0.0) + rest
    return result


def drift_report(
    reference: ProfileSummary | DatasetProfileView,
    current: ProfileSummary | DatasetProfileView,
    columns: Sequence[str],
    *,
    categorical: Sequence[str] | None = None,
    min_psi: float | None = None,
) -> DriftReport:
    """Per-column drift of ``current`` against ``reference`` (served traffic vs the training
    reference), from the two profiles' sketches (module doc). A column is categorical if listed
    in ``categorical`` or if its profile holds no numeric distribution (strings)."""
    ref_view = reference.view if isinstance(reference, ProfileSummary) else reference
    cur_view = current.view if isinstance(current, ProfileSummary) else current
    ref_cols, cur_cols = ref_view.get_columns(), cur_view.get_columns()
    missing = [c for c in columns if c not in ref_cols or c not in cur_cols]
    if missing:
        raise ValueError(f"drift_report: columns {missing} are absent from a profile")
    cat_set = set(categorical or ())
    results: dict[str, ColumnDrift] = {}
    for name in columns:
        numeric = None
        if name not in cat_set:
            numeric = _sketch_numeric_drift(name, ref_cols[name], cur_cols[name], min_psi)
        results[name] = numeric or _categorical_drift(
            name,
            _sketch_category_counts(ref_cols[name]),
            _sketch_category_counts(cur_cols[name]),
            min_psi,
        )

    def rows(view: Any) -> int:
        counts = [int(c.get_metric("counts").n.value) for c in view.get_columns().values()]
        return max(counts, default=0)

    return DriftReport(
        columns=results,
        reference_rows=rows(ref_view),
        current_rows=rows(cur_view),
        min_psi=min_psi,
    )
