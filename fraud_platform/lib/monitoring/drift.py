"""Data monitoring: whylogs profiles, feature drift and training-serving skew.

whylogs is used only here (and imported lazily), so it can be swapped: whylogs 1.6.4 had its
last release in 2024 and needs numpy<2.

Drift. whylogs' own scores (``whylogs.viz.drift.column_drift_algorithms.calculate_drift_scores``)
live under ``whylogs.viz``, which imports IPython unconditionally; IPython is not a dependency
here, so this module computes the same tests itself with scipy, with whylogs' thresholds:

* numeric columns: two-sample Kolmogorov-Smirnov on the non-null values;
* categorical columns (strings, booleans): chi-square test of homogeneity on the category counts
  (nulls are the category ``__missing__``);
* status from the p-value: ``p < 0.05`` DRIFT, ``p < 0.15`` POSSIBLE_DRIFT, else NO_DRIFT;
* a change in the null rate is tested too (chi-square on null / non-null counts) and the column
  takes the smaller p-value: a feature that goes missing in serving is drift;
* PSI (population stability index; < 0.1 stable, 0.1-0.25 moderate, > 0.25 large shift) on
  reference-quantile bins (numeric) or categories, nulls as their own bin.

``drift_report`` works on frames (exact tests); ``drift_report_from_profiles`` works on two
stored profiles alone (KS from the KLL sketches as whylogs does, chi-square from the frequent-items
sketch), for when the raw data is gone. On large samples p-values flag even tiny shifts; pass
``min_psi`` to require a minimum effect size before a column counts as drifting.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import MISSING_CATEGORY
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
FREQUENT_ITEMS = 10  # in profile summaries


# ---------------------------------------------------------------------------------------------
# whylogs profiles


def _whylogs() -> Any:
    """Import whylogs with its usage telemetry off.

    whylogs posts usage statistics to stats.whylogs.com from a thread started at import time
    (and joins it at exit); ``WHYLOGS_NO_ANALYTICS`` must be set before the first import.
    """
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
    import whylogs

    return whylogs


def _dataset_profile_view_class() -> Any:
    _whylogs()
    from whylogs.core import DatasetProfileView

    return DatasetProfileView


def _column_summary(view: DatasetProfileView, column: str) -> dict[str, Any]:
    col = view.get_column(column)
    counts = col.get_metric("counts")
    summary: dict[str, Any] = {
        "count": int(counts.n.value) if counts else None,
        "null_count": int(counts.null.value) if counts else None,
    }
    distribution = col.get_metric("distribution")
    if distribution is not None and not distribution.kll.value.is_empty():
        d = distribution.to_summary_dict()
        summary.update(
            {
                "mean": d["mean"],
                "stddev": d["stddev"],
                "min": d["min"],
                "max": d["max"],
                "quantiles": {
                    key: d[key]
                    for key in ("q_01", "q_05", "q_25", "median", "q_75", "q_95", "q_99")
                },
            }
        )
    cardinality = col.get_metric("cardinality")
    if cardinality is not None:
        summary["distinct_estimate"] = float(cardinality.to_summary_dict()["est"])
    frequent = col.get_metric("frequent_items")
    if frequent is not None:
        items = frequent.to_summary_dict().get("frequent_strings", [])[:FREQUENT_ITEMS]
        summary["frequent_items"] = [{"value": i.value, "count": int(i.est)} for i in items]
    return json_safe(summary)


@dataclass(frozen=True)
class ProfileSummary:
    """A whylogs profile (``view``) and a JSON-serialisable digest of it per column."""

    view: DatasetProfileView
    rows: int
    columns: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": self.columns}


def _summarise(view: DatasetProfileView, columns: Sequence[str] | None = None) -> ProfileSummary:
    names = list(columns) if columns is not None else sorted(view.get_columns())
    summaries = {name: _column_summary(view, name) for name in names}
    rows = max((s["count"] or 0 for s in summaries.values()), default=0)
    return ProfileSummary(view=view, rows=rows, columns=summaries)


def profile_frame(frame: pl.DataFrame, columns: Sequence[str]) -> ProfileSummary:
    """Profile ``columns`` of a polars frame with whylogs (``why.log(pandas).view()``)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"profile_frame: the frame has no columns {missing}")
    why = _whylogs()
    view = why.log(frame.select(list(columns)).to_pandas()).view()
    return _summarise(view, columns)


def write_profile(profile: ProfileSummary | DatasetProfileView, path: str | Path) -> Path:
    """Write the whylogs binary profile to ``path`` (atomically: temp file, then rename)."""
    view = profile.view if isinstance(profile, ProfileSummary) else profile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(view.serialize())
    tmp.replace(path)
    return path


def read_profile(path: str | Path) -> ProfileSummary:
    """Read a profile written by ``write_profile`` (or any whylogs binary profile)."""
    view = _dataset_profile_view_class().deserialize(Path(path).read_bytes())
    return _summarise(view)


# ---------------------------------------------------------------------------------------------
# drift


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
    source: str  # "data" | "profiles"
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


def _is_categorical(dtype: pl.DataType) -> bool:
    return not dtype.is_numeric() or dtype == pl.Boolean


def _numeric_values(series: pl.Series) -> np.ndarray:
    values = series.cast(pl.Float64).fill_nan(None).drop_nulls().to_numpy()
    return np.asarray(values, dtype=np.float64)


def _numeric_drift(
    name: str, reference: pl.Series, current: pl.Series, min_psi: float | None
) -> ColumnDrift:
    from scipy.stats import ks_2samp

    ref, cur = _numeric_values(reference), _numeric_values(current)
    ref_null, cur_null = reference.len() - ref.size, current.len() - cur.size
    statistic = dist_p = psi = None
    if ref.size and cur.size:
        result = ks_2samp(ref, cur)
        statistic, dist_p = float(result.statistic), float(result.pvalue)
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
        ref_bins = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
        cur_bins = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
        ref_counts = np.r_[ref_bins, ref_null]
        cur_counts = np.r_[cur_bins, cur_null]
        psi = _psi(ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum())
    elif ref.size or cur.size:
        dist_p = 0.0  # values on one side only: the column appeared or vanished entirely
    null_p = _null_pvalue(ref_null, reference.len(), cur_null, current.len())
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
        reference_count=reference.len(),
        current_count=current.len(),
        reference_null_rate=_rate(ref_null, reference.len()),
        current_null_rate=_rate(cur_null, current.len()),
        reference_mean=float(ref.mean()) if ref.size else None,
        current_mean=float(cur.mean()) if cur.size else None,
    )


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


def _category_counts(series: pl.Series) -> dict[str, float]:
    values = series.cast(pl.String).fill_null(MISSING_CATEGORY)
    counts = values.value_counts()
    return {str(k): float(v) for k, v in zip(counts[:, 0], counts[:, 1], strict=True)}


def drift_report(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    columns: Sequence[str],
    *,
    categorical: Sequence[str] | None = None,
    min_psi: float | None = None,
) -> DriftReport:
    """Per-column drift of ``current`` against ``reference`` (e.g. served traffic vs training).

    Columns are categorical if listed in ``categorical`` or if their dtype is not numeric
    (strings, booleans); numeric otherwise.
    """
    missing = [c for c in columns if c not in reference.columns or c not in current.columns]
    if missing:
        raise ValueError(f"drift_report: columns {missing} are absent from a frame")
    cat_set = set(categorical or ())
    results: dict[str, ColumnDrift] = {}
    for name in columns:
        if name in cat_set or _is_categorical(reference.schema[name]):
            results[name] = _categorical_drift(
                name, _category_counts(reference[name]), _category_counts(current[name]), min_psi
            )
        else:
            results[name] = _numeric_drift(name, reference[name], current[name], min_psi)
    return DriftReport(
        columns=results,
        reference_rows=reference.height,
        current_rows=current.height,
        source="data",
        min_psi=min_psi,
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


def drift_report_from_profiles(
    reference: ProfileSummary | DatasetProfileView,
    current: ProfileSummary | DatasetProfileView,
    columns: Sequence[str],
    *,
    categorical: Sequence[str] | None = None,
    min_psi: float | None = None,
) -> DriftReport:
    """Same report from two whylogs profiles (approximate: sketches, not the raw values)."""
    ref_view = reference.view if isinstance(reference, ProfileSummary) else reference
    cur_view = current.view if isinstance(current, ProfileSummary) else current
    ref_cols, cur_cols = ref_view.get_columns(), cur_view.get_columns()
    missing = [c for c in columns if c not in ref_cols or c not in cur_cols]
    if missing:
        raise ValueError(f"drift_report_from_profiles: columns {missing} are absent from a profile")
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
        source="profiles",
        min_psi=min_psi,
    )


# ---------------------------------------------------------------------------------------------
# training-serving skew


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def skew_report(
    offline: pl.DataFrame,
    served: pl.DataFrame,
    key_cols: Sequence[str],
    feature_cols: Sequence[str],
    tolerance: float = 1e-9,
    max_examples: int = 5,
) -> dict[str, Any]:
    """Compare the feature values the service used with the offline values for the same keys.

    Every served row is joined to the offline row with the same key (offline keys must be
    unique). Numeric values match when ``|served - offline| <= tolerance * (1 + |offline|)``;
    other values must be equal; null matches null (NaN counts as null). Returns a
    JSON-serialisable dict with the per-feature mismatch rate and a few examples.
    """
    keys, features = list(key_cols), list(feature_cols)
    for label, frame in (("offline", offline), ("served", served)):
        missing = [c for c in keys + features if c not in frame.columns]
        if missing:
            raise ValueError(f"skew_report: the {label} frame has no columns {missing}")
    duplicated = offline.select(keys).is_duplicated().sum()
    if duplicated:
        raise ValueError(f"skew_report: {duplicated} offline rows share a key {keys}")
    suffix = "__offline"
    served_part = served.select(keys + features)
    offline_part = offline.select(keys + features)
    joined = served_part.join(offline_part, on=keys, how="inner", suffix=suffix)
    unmatched = served_part.join(offline_part, on=keys, how="anti").height

    per_feature: dict[str, dict[str, Any]] = {}
    for name in features:
        served_s, offline_s = joined[name], joined[f"{name}{suffix}"]
        max_abs_diff = None
        if offline_s.dtype.is_numeric() or offline_s.dtype == pl.Boolean:
            a = served_s.cast(pl.Float64, strict=False).fill_nan(None)
            b = offline_s.cast(pl.Float64).fill_nan(None)
            diff = (a - b).abs()
            close = (diff <= tolerance * (1.0 + b.abs())).fill_null(False)
            equal = close | (a.is_null() & b.is_null())
            if diff.drop_nulls().len():
                max_abs_diff = float(diff.max())  # type: ignore[arg-type]
        else:
            a = served_s.cast(pl.String)
            b = offline_s.cast(pl.String)
            equal = a.eq_missing(b)
        mismatch = ~equal
        null_mismatch = (a.is_null() ^ b.is_null()).sum()
        count = int(mismatch.sum())
        examples = (
            joined.filter(mismatch)
            .select(
                keys + [pl.col(name).alias("served"), pl.col(f"{name}{suffix}").alias("offline")]
            )
            .head(max_examples)
            .to_dicts()
        )
        per_feature[name] = {
            "compared": joined.height,
            "mismatches": count,
            "mismatch_rate": count / joined.height if joined.height else None,
            "null_mismatches": int(null_mismatch),
            "max_abs_diff": max_abs_diff,
            "examples": [{k: _json_value(v) for k, v in e.items()} for e in examples],
        }
    rates = {k: v["mismatch_rate"] for k, v in per_feature.items() if v["mismatch_rate"]}
    return json_safe(
        {
            "rows_offline": offline.height,
            "rows_served": served.height,
            "rows_compared": joined.height,
            "served_without_offline": unmatched,
            "tolerance": tolerance,
            "features_with_skew": sorted(rates, key=lambda k: (-rates[k], k)),
            "max_mismatch_rate": max(rates.values(), default=0.0),
            "features": per_feature,
        }
    )
