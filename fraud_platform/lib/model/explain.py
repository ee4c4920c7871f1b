"""Why the model scored a row: top SHAP reasons for one row, SHAP values of a sample.

CatBoost models are explained by their own SHAP values. Scikit-learn baselines
(``baseline.SklearnModel``) explain themselves: exact linear contributions for logistic
regression, global importances for the random forest (no tree SHAP in scikit-learn; see
``baseline.py``).

CatBoost is imported lazily.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import (
    TrainedModel,
    model_signature,
    normalise_frame,
    prepare_values,
    to_model_input,
)

if TYPE_CHECKING:
    from catboost import CatBoostClassifier


def top_reasons(
    model: TrainedModel | CatBoostClassifier,
    row: Mapping[str, Any] | pl.DataFrame,
    k: int = 3,
    *,
    allow_missing: bool = False,
    shap_calc_type: str = "Regular",
) -> list[dict[str, Any]]:
    """The ``k`` features pushing this prediction most towards fraud (largest positive SHAP).

    Each reason is ``{"feature", "value", "contribution"}``: the value as the model saw it
    (NaN -> None) and the SHAP contribution in log-odds. Fewer than ``k`` reasons come back when
    fewer features contribute positively. ``shap_calc_type="Approximate"`` is faster.
    """
    if isinstance(row, pl.DataFrame) and row.height != 1:
        raise ValueError(f"top_reasons explains one row, got {row.height}")
    inner = model.model if isinstance(model, TrainedModel) else model
    if hasattr(inner, "reasons"):  # a scikit-learn baseline explains itself
        return inner.reasons(row, k, allow_missing=allow_missing)
    from catboost import Pool

    cb_model, features, categorical = model_signature(model)
    cat_set = frozenset(categorical)
    values = prepare_values(row, features, cat_set, allow_missing)[0]
    pool = Pool(
        [values],
        cat_features=[i for i, name in enumerate(features) if name in cat_set],
        feature_names=list(features),
        thread_count=1,  # the default (all cores) leaves CatBoost threads spinning (input.py)
    )
    shap = cb_model.get_feature_importance(
        pool, type="ShapValues", thread_count=1, shap_calc_type=shap_calc_type
    )
    contributions = np.asarray(shap)[0, :-1]  # the last column is the expected value
    return reasons_from(contributions, values, features, k)


def reasons_from(
    contributions: np.ndarray, values: Sequence[Any], features: Sequence[str], k: int
) -> list[dict[str, Any]]:
    """``top_reasons``' answer from one row's SHAP values and model-input values."""
    order = np.argsort(-contributions, kind="stable")
    reasons = []
    for index in order[:k]:
        contribution = float(contributions[index])
        if contribution <= 0:
            break
        value = values[index]
        if isinstance(value, float) and math.isnan(value):
            value = None
        reasons.append({"feature": features[index], "value": value, "contribution": contribution})
    return reasons


def shap_values(
    model: TrainedModel | CatBoostClassifier,
    frame: pl.DataFrame,
    max_rows: int = 2000,
    seed: int = 0,
    *,
    thread_count: int = 2,
) -> tuple[np.ndarray, pl.DataFrame, list[str]]:
    """SHAP contributions (log-odds) of a deterministic sample of ``frame``'s rows.

    Returns ``(shap, values, features)``: ``shap`` has one row per sampled row and one column
    per feature (CatBoost's expected-value column dropped: ``shap.sum(axis=1) + expected value``
    is the raw log-odds prediction); ``values`` are the model-input values of the same rows, in
    the same order (after ``to_model_input``'s normalisation: floats with NaN, category
    strings); ``features`` is the model's feature order. With more than ``max_rows`` rows, a
    sample drawn by ``numpy.random.default_rng(seed)`` is kept in its original order.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if frame.is_empty():
        raise ValueError("shap_values: the frame has no rows")
    cb_model, features, categorical = model_signature(model)
    if frame.height > max_rows:
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(frame.height, size=max_rows, replace=False))
        frame = frame[index.tolist()]
    if hasattr(cb_model, "explain_sample"):  # logistic regression: exact linear contributions
        contributions, values = cb_model.explain_sample(frame)
        return contributions, values, features
    values = normalise_frame(frame, features, frozenset(categorical))
    pool = to_model_input(values, features, categorical)
    shap = np.asarray(
        cb_model.get_feature_importance(pool, type="ShapValues", thread_count=thread_count),
        dtype=np.float64,
    )
    return shap[:, :-1], values, features
