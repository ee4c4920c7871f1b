"""Refit the selected model on every matured row up to the cutoff.

The time split keeps the last ``validation + test + 2 gaps`` days (10 by default) out of the fit:
validation early-stops and sets the thresholds, test gates. Once the model is selected, the
most recent fraud patterns are in exactly those days, so a refit with the selected
hyper-parameters and the selected number of trees on all of them is what goes into service
(no early stopping: there is no held-out data left; the number of trees is the one early
stopping chose).

The refit has no held-out rows to choose thresholds on, and its scores are not on the selected
model's scale (measured on the demo's data: the selected model's thresholds reused as they are
made the refit decline 221 rather than 48 of 40,673 window transactions). ``matched_thresholds``
keeps what the thresholds mean to the review team instead: the share of the validation traffic
each one flags is the same for the refit as for the selected model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.model.baseline import SklearnModel
from fraud_platform.lib.model.input import (
    LABEL_COLUMN,
    TIME_COLUMN,
    TrainedModel,
    predict_proba,
    to_model_input,
)
from fraud_platform.lib.serving.policy import Thresholds
from fraud_platform.lib.training.fit import labels_of
from fraud_platform.lib.training.sampling import fit_weights, weights_of


def refit_on_all(selected: TrainedModel, frame: pl.DataFrame, *, log: Any = None) -> TrainedModel:
    """The selected CatBoost model's parameters and tree count, fitted on all of ``frame``."""
    from catboost import CatBoostClassifier

    if isinstance(selected.model, SklearnModel):
        return _refit_baseline(selected, frame, log=log)
    if not hasattr(selected.model, "tree_count_"):
        raise ValueError(
            f"refit supports CatBoost and the baselines; the selected model is a "
            f"{type(selected.model).__name__}"
        )
    params: dict[str, Any] = dict(selected.params.get("catboost") or selected.model.get_params())
    params.pop("early_stopping_rounds", None)
    trees = int(selected.model.tree_count_)
    params["iterations"] = trees
    ordered = frame.sort(_order(frame))
    pool = to_model_input(
        ordered,
        list(selected.features),
        list(selected.categorical),
        label=ordered[LABEL_COLUMN].cast(pl.Int8).to_numpy(),
        weight=weights_of(ordered),
    )
    if log:
        log(
            f"refit: {trees} trees on all {ordered.height} matured rows "
            f"({int(ordered[LABEL_COLUMN].sum())} fraud)"
        )
    started = time.perf_counter()
    model = CatBoostClassifier(**params)
    model.fit(pool)
    return TrainedModel(
        model=model,
        features=selected.features,
        categorical=selected.categorical,
        best_iteration=trees - 1,
        params={**selected.params, "catboost": params, "refit": True},
        best_scores={},
        train_seconds=time.perf_counter() - started,
    )


def _refit_baseline(
    selected: TrainedModel, frame: pl.DataFrame, *, log: Any = None
) -> TrainedModel:
    """A scikit-learn baseline: the same pipeline (same parameters) fitted on all of ``frame``."""
    from sklearn.base import clone

    pipeline = clone(selected.model.pipeline)
    wrapper = dataclasses.replace(selected.model, pipeline=pipeline)
    ordered = frame.sort(_order(frame))
    if log:
        log(f"refit: {selected.model.kind} on all {ordered.height} matured rows")
    started = time.perf_counter()
    pipeline.fit(wrapper.frame(ordered), labels_of(ordered), **fit_weights(ordered))
    return dataclasses.replace(
        selected,
        model=wrapper,
        params={**selected.params, "refit": True},
        train_seconds=time.perf_counter() - started,
    )


def matched_thresholds(
    selected: TrainedModel,
    refitted: TrainedModel,
    validation: pl.DataFrame,
    thresholds: Thresholds,
) -> Thresholds:
    """Thresholds for ``refitted`` that flag (review) and decline the same shares of
    ``validation`` as ``thresholds`` do with ``selected``."""
    before = predict_proba(selected, validation)
    after = np.sort(predict_proba(refitted, validation))[::-1]

    def same_share(threshold: float) -> float | None:
        flagged = int((before >= threshold).sum())
        return float(after[flagged - 1]) if flagged else None

    review = same_share(thresholds.review)
    review = thresholds.review if review is None else review
    decline = same_share(thresholds.decline)
    decline = max(thresholds.decline, review) if decline is None else max(decline, review)
    return Thresholds(review=review, decline=decline)


def _order(frame: pl.DataFrame) -> Sequence[str]:
    return [c for c in (TIME_COLUMN, "transaction_id") if c in frame.columns]


__all__ = ["matched_thresholds", "refit_on_all"]
