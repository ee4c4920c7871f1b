"""Scikit-learn baseline models as the platform serves them: a fitted pipeline plus its feature
order, scored and explained through the same model input as CatBoost.

A model's kind is recorded in its registry metadata (``KIND_METADATA_KEY``): ``catboost``,
``logreg`` (impute + standardise + logistic regression) or ``forest`` (impute + random forest).
The model store keeps the scikit-learn ``Pipeline`` itself (``bentoml.sklearn``); loading wraps
it again in ``SklearnModel`` with the feature order recorded in the metadata.

Input: ``input.prepare_values`` (numeric float64 with NaN, categorical strings with
``__missing__``), as a pandas frame whose columns are the model's features.

Explanations:

* ``logreg``: exact per-row contributions in log-odds, ``coef * z`` per transformed column
  (``z`` is the standardised value, so the reference is the training mean), summed back onto
  the original feature (one-hot and missing-indicator columns belong to their feature). For a
  linear model with standardised inputs this equals its (interventional) SHAP values.
* ``forest``: scikit-learn has no tree SHAP and the ``shap`` package is not a dependency, so the
  reasons are the forest's top features by global impurity importance (the same features for
  every row, with the row's values); ``contribution`` is that importance share, not log-odds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import normalise_frame, prepare_values

KIND_METADATA_KEY = "model_kind"
CATBOOST = "catboost"
LOGREG = "logreg"
FOREST = "forest"
MODEL_KINDS: tuple[str, ...] = (CATBOOST, LOGREG, FOREST)
SKLEARN_KINDS: tuple[str, ...] = (LOGREG, FOREST)


def check_kind(kind: str) -> str:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {MODEL_KINDS}")
    return kind


def kind_of_metadata(metadata: Mapping[str, Any]) -> str:
    """The kind a registered model was saved as (models registered before kinds: CatBoost)."""
    return check_kind(str(metadata.get(KIND_METADATA_KEY) or CATBOOST))


@dataclass(frozen=True)
class SklearnModel:
    """A fitted scikit-learn pipeline ``preprocess -> [scale ->] classifier`` and its inputs.

    ``column_owner[j]`` is the index (in ``features``) of the feature the preprocessed column
    ``j`` comes from. ``feature_names_`` mirrors CatBoost's attribute, so code that reads a raw
    model's feature order works for both kinds.
    """

    pipeline: Any  # sklearn.pipeline.Pipeline
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    kind: str
    column_owner: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in SKLEARN_KINDS:
            raise ValueError(f"SklearnModel kind must be one of {SKLEARN_KINDS}, got {self.kind!r}")

    @property
    def feature_names_(self) -> list[str]:
        return list(self.features)

    def get_cat_feature_indices(self) -> list[int]:
        cat = set(self.categorical)
        return [i for i, name in enumerate(self.features) if name in cat]

    def frame(
        self,
        rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
        allow_missing: bool = False,
    ) -> Any:
        """The pandas frame the pipeline reads (same normalisation as CatBoost's input)."""
        import pandas as pd

        values = prepare_values(rows, self.features, frozenset(self.categorical), allow_missing)
        if isinstance(values, pd.DataFrame):
            return values
        return pd.DataFrame(values, columns=list(self.features))

    @cached_property
    def row_transform(self) -> Callable[[Mapping[str, Any]], np.ndarray] | None:
        """``pipeline[:-1].transform`` of one dict row, compiled (``sklearn_row``), or None."""
        from fraud_platform.lib.model.sklearn_row import compile_row_transform

        return compile_row_transform(self)

    @cached_property
    def row_scorer(self) -> Callable[[Mapping[str, Any]], float] | None:
        """The fraud probability of one dict row, compiled (``sklearn_row``), or None."""
        from fraud_platform.lib.model.sklearn_row import compile_row_scorer

        return compile_row_scorer(self)

    def predict_scores(
        self,
        rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
        *,
        allow_missing: bool = False,
    ) -> np.ndarray:
        """Probability of fraud per row (float64)."""
        if allow_missing and isinstance(rows, Mapping) and self.row_scorer is not None:
            return np.array([self.row_scorer(rows)], dtype=np.float64)
        probabilities = self.pipeline.predict_proba(self.frame(rows, allow_missing))
        return np.asarray(probabilities[:, 1], dtype=np.float64)

    def get_feature_importance(self) -> np.ndarray:
        """Importance per original feature, summing to 1: |coef| of the standardised columns
        (logreg) or mean impurity decrease (forest)."""
        classifier = self.pipeline[-1]
        if self.kind == LOGREG:
            per_column = np.abs(np.asarray(classifier.coef_[0], dtype=np.float64))
        else:
            per_column = np.asarray(classifier.feature_importances_, dtype=np.float64)
        per_feature = np.zeros(len(self.features))
        np.add.at(per_feature, np.asarray(self.column_owner), per_column)
        total = per_feature.sum()
        return per_feature / total if total > 0 else per_feature

    def contributions(
        self,
        rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
        allow_missing: bool = False,
    ) -> np.ndarray:
        """Per-row, per-feature log-odds contributions of a logistic regression (module doc)."""
        if self.kind != LOGREG:
            raise ValueError(
                f"per-row contributions exist for logreg models only, not {self.kind} "
                "(scikit-learn has no tree SHAP)"
            )
        if allow_missing and isinstance(rows, Mapping) and self.row_transform is not None:
            transformed = self.row_transform(rows)
        else:
            transformed = self.pipeline[:-1].transform(self.frame(rows, allow_missing))
        transformed = np.asarray(
            transformed.toarray() if hasattr(transformed, "toarray") else transformed,
            dtype=np.float64,
        )
        per_column = transformed * np.asarray(self.pipeline[-1].coef_[0], dtype=np.float64)
        out = np.zeros((per_column.shape[0], len(self.features)))
        for j, owner in enumerate(self.column_owner):
            out[:, owner] += per_column[:, j]
        return out

    def reasons(
        self, row: Mapping[str, Any] | pl.DataFrame, k: int, allow_missing: bool = False
    ) -> list[dict[str, Any]]:
        """The top ``k`` reasons for one row, as ``explain.top_reasons`` returns them."""
        values = prepare_values(row, self.features, frozenset(self.categorical), allow_missing)
        first = values.iloc[0].tolist() if hasattr(values, "iloc") else values[0]
        if self.kind == LOGREG:
            scores = self.contributions(row, allow_missing)[0]
        else:
            scores = self.get_feature_importance()
        order = np.argsort(-scores, kind="stable")
        reasons = []
        for index in order[:k]:
            contribution = float(scores[index])
            if contribution <= 0:
                break
            value = first[index]
            if isinstance(value, float) and np.isnan(value):
                value = None
            reasons.append(
                {"feature": self.features[index], "value": value, "contribution": contribution}
            )
        return reasons

    def explain_sample(self, frame: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
        """(contributions, model-input values) of ``frame``'s rows (logreg only)."""
        values = normalise_frame(frame, self.features, frozenset(self.categorical))
        return self.contributions(frame), values


# ---------------------------------------------------------------------------------------------
# the model store (BentoML): what is saved per kind, and loading it back


def store_metadata(model: Any) -> dict[str, Any]:
    """What the store must record beside a model so ``load_from_store`` rebuilds it."""
    if isinstance(model, SklearnModel):
        return {KIND_METADATA_KEY: model.kind, "column_owner": list(model.column_owner)}
    return {KIND_METADATA_KEY: CATBOOST}


def save_to_store(
    name: str,
    model: Any,
    *,
    metadata: dict[str, Any],
    labels: dict[str, str],
) -> Any:
    """Save a CatBoost model or a ``SklearnModel`` in the active BentoML model store; returns
    the ``bentoml.Model``. ``metadata`` gains the kind (and the column owners of a baseline)."""
    import bentoml

    metadata = {**metadata, **store_metadata(model)}
    signatures = {"predict_proba": {"batchable": True}}
    if isinstance(model, SklearnModel):
        return bentoml.sklearn.save_model(
            name, model.pipeline, metadata=metadata, labels=labels, signatures=signatures
        )
    return bentoml.catboost.save_model(
        name, model, metadata=metadata, labels=labels, signatures=signatures
    )


def load_from_store(entry: Any) -> Any:
    """The model of a model-store entry (a ``bentoml.Model``), by its recorded kind: a CatBoost
    model, or a ``SklearnModel`` rebuilt with the recorded feature order."""
    import bentoml

    metadata = entry.info.metadata
    kind = kind_of_metadata(metadata)
    if kind == CATBOOST:
        return bentoml.catboost.load_model(entry)
    missing = [k for k in ("features", "categorical_features", "column_owner") if k not in metadata]
    if missing:
        raise ValueError(f"model {entry.tag} ({kind}): metadata lacks {missing}")
    return SklearnModel(
        pipeline=bentoml.sklearn.load_model(entry),
        features=tuple(metadata["features"]),
        categorical=tuple(metadata["categorical_features"]),
        kind=kind,
        column_owner=tuple(int(i) for i in metadata["column_owner"]),
    )


__all__ = [
    "load_from_store",
    "save_to_store",
    "store_metadata",
    "CATBOOST",
    "FOREST",
    "KIND_METADATA_KEY",
    "LOGREG",
    "MODEL_KINDS",
    "SKLEARN_KINDS",
    "SklearnModel",
    "check_kind",
    "kind_of_metadata",
]
