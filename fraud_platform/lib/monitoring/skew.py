"""Training-serving skew: the feature values the service used against the offline values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import polars as pl

from fraud_platform.lib.training.evaluation import json_safe


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
