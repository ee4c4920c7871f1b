"""The one model-input conversion used everywhere, the fitted-model record, and batch scoring.

``to_model_input`` is the single place that turns feature values into what the model reads:
training, evaluation, batch scoring and the online service all go through it, so offline and
online scoring cannot drift apart. Its rules:

* the column order is the model's feature order (numeric features, then categorical ones);
* numeric values become float64, nulls become NaN (CatBoost treats NaN as missing);
* categorical values become strings, nulls become ``"__missing__"``, booleans ``"true"/"false"``
  (as polars casts them), bytes are decoded as UTF-8.

CatBoost is imported lazily so that importing this module (e.g. from a Dagster code location)
stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from catboost import CatBoostClassifier, Pool

MISSING_CATEGORY = "__missing__"
LABEL_COLUMN = "is_fraud"
TIME_COLUMN = "event_time"
ID_COLUMN = "transaction_id"
# Columns that describe the label or the row itself: never model features.
NON_FEATURE_COLUMNS = frozenset({LABEL_COLUMN, "fraud_type", ID_COLUMN, TIME_COLUMN, "label_time"})
# Inputs up to this many rows are converted row-wise (no pandas) and built and predicted on one
# thread. A Pool's default thread_count (-1: all cores) starts CatBoost's executor threads, which
# then spin on every later call: ~0.7 ms of CPU per one-row prediction in a server, measured.
SMALL_INPUT_ROWS = 256


def _numeric_value(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)  # bools, ints, numeric strings/bytes (e.g. from Redis)
    except (TypeError, ValueError):
        raise ValueError(f"numeric feature {name!r} has a non-numeric value {value!r}") from None


def _categorical_value(value: Any) -> str:
    if value is None:
        return MISSING_CATEGORY
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def _rows_from_dicts(
    rows: Iterable[Mapping[str, Any]],
    features: Sequence[str],
    is_cat: Sequence[bool],
    allow_missing: bool,
) -> list[list[Any]]:
    out: list[list[Any]] = []
    for row in rows:
        if not allow_missing:
            missing = [name for name in features if name not in row]
            if missing:
                raise KeyError(f"row is missing features {missing} (pass None for a null value)")
        out.append(
            [
                _categorical_value(row.get(name)) if cat else _numeric_value(name, row.get(name))
                for name, cat in zip(features, is_cat, strict=True)
            ]
        )
    return out


def normalise_frame(
    frame: pl.DataFrame, features: Sequence[str], categorical: frozenset[str]
) -> pl.DataFrame:
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise ValueError(f"the frame has no column for features {missing}")
    return frame.select(
        [
            pl.col(name).cast(pl.String).fill_null(MISSING_CATEGORY)
            if name in categorical
            else pl.col(name).cast(pl.Float64).fill_null(math.nan)
            for name in features
        ]
    )


def to_model_input(
    rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    features: Sequence[str],
    categorical: Iterable[str],
    *,
    label: Any = None,
    weight: Any = None,
    allow_missing: bool = False,
) -> Pool:
    """A ``catboost.Pool`` with exactly the given feature order and the types described above.

    ``rows``: a polars frame, a list of dicts, or one dict. With dicts, a feature key that is
    absent raises ``KeyError`` unless ``allow_missing=True`` (then it counts as null).
    """
    from catboost import Pool

    cat_set = frozenset(categorical)
    data = prepare_values(rows, features, cat_set, allow_missing)
    cat_indices = [i for i, name in enumerate(features) if name in cat_set]
    threads = 1 if len(data) <= SMALL_INPUT_ROWS else -1
    return Pool(
        data,
        label=label,
        weight=weight,
        cat_features=cat_indices,
        feature_names=list(features),
        thread_count=threads,
    )


def prepare_values(
    rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    features: Sequence[str],
    cat_set: frozenset[str],
    allow_missing: bool,
) -> Any:
    """Normalised values: a list of rows for small inputs, a pandas frame for large frames."""
    unknown = cat_set - set(features)
    if unknown:
        raise ValueError(f"categorical features {sorted(unknown)} are not in the feature list")
    if isinstance(rows, pl.DataFrame):
        normalised = normalise_frame(rows, features, cat_set)
        if normalised.height == 0:
            raise ValueError("to_model_input: the frame has no rows")
        if normalised.height <= SMALL_INPUT_ROWS:
            return normalised.rows()
        return normalised.to_pandas()
    if isinstance(rows, Mapping):
        rows = [rows]
    is_cat = [name in cat_set for name in features]
    data = _rows_from_dicts(rows, features, is_cat, allow_missing)
    if not data:
        raise ValueError("to_model_input: no rows")
    return data


@dataclass(frozen=True)
class TrainedModel:
    """A fitted model plus what is needed to feed it: a CatBoost classifier, or a scikit-learn
    baseline (``baseline.SklearnModel``, ``kind`` says which)."""

    model: CatBoostClassifier
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    best_iteration: int
    params: dict[str, Any] = field(default_factory=dict)
    best_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0
    kind: str = "catboost"

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(name for name in self.features if name not in set(self.categorical))

    def feature_importances(self) -> list[tuple[str, float]]:
        """(feature, PredictionValuesChange importance), largest first."""
        values = self.model.get_feature_importance()
        pairs = [(name, float(v)) for name, v in zip(self.features, values, strict=True)]
        return sorted(pairs, key=lambda p: p[1], reverse=True)

    def metadata(self) -> dict[str, Any]:
        """JSON-serialisable description for a model registry."""
        return {
            "features": list(self.features),
            "categorical_features": list(self.categorical),
            "best_iteration": self.best_iteration,
            "tree_count": int(getattr(self.model, "tree_count_", 0)),
            "params": self.params,
            "best_scores": self.best_scores,
            "train_seconds": round(self.train_seconds, 3),
        }


def check_features(numeric: Sequence[str], categorical: Sequence[str]) -> None:
    overlap = set(numeric) & set(categorical)
    if overlap:
        raise ValueError(f"features listed as both numeric and categorical: {sorted(overlap)}")
    leaky = (set(numeric) | set(categorical)) & NON_FEATURE_COLUMNS
    if leaky:
        raise ValueError(f"label/identity columns cannot be features: {sorted(leaky)}")
    names = list(numeric) + list(categorical)
    if len(set(names)) != len(names):
        raise ValueError("duplicate feature names")
    if not names:
        raise ValueError("no features given")


def model_signature(model: Any) -> tuple[Any, list[str], list[str]]:
    """(catboost model, feature order, categorical features) of a TrainedModel or a raw model."""
    if isinstance(model, TrainedModel):
        return model.model, list(model.features), list(model.categorical)
    features = list(model.feature_names_)
    categorical = [features[i] for i in model.get_cat_feature_indices()]
    return model, features, categorical


def predict_proba(
    model: Any,
    rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    allow_missing: bool = False,
    thread_count: int = 2,
) -> np.ndarray:
    """Fraud score (probability of the positive class) per row, as a float64 array.

    Same conversion (``to_model_input``) for batch frames and single online requests. Inputs
    of up to ``SMALL_INPUT_ROWS`` rows are predicted on one thread.
    """
    inner = model.model if isinstance(model, TrainedModel) else model
    if hasattr(inner, "predict_scores"):  # a scikit-learn baseline (model/baseline.py)
        return inner.predict_scores(rows, allow_missing=allow_missing)
    cb_model, features, categorical = model_signature(model)
    pool = to_model_input(rows, features, categorical, allow_missing=allow_missing)
    threads = 1 if pool.num_row() <= SMALL_INPUT_ROWS else thread_count
    return cb_model.predict(pool, prediction_type="Probability", thread_count=threads)[:, 1]


class OneRowPredictor:
    """``predict_proba(model, row, allow_missing=True)[0]`` for one dict row, at lower cost per
    call: the model's feature order and categorical indices are read once, here, and the
    one-row ``Pool`` carries no feature names (CatBoost reads columns by position, in the
    model's order) and is built on one thread (``SMALL_INPUT_ROWS``). Same conversion
    (``_rows_from_dicts``), bit-identical score (tests/unit/model/test_model_input.py).

    For a CatBoost model of oblivious trees the score comes from the trees' leaves
    (``fast_eval.LeafEvaluator``, built on first use and checked against CatBoost there), and
    ``predict`` also returns what ``contributions`` needs for the row's approximate SHAP values
    (CatBoost's ``Approximate`` ones) without another CatBoost call. The leaves themselves come
    without a ``Pool`` (``leaf_index.LeafIndexer``) once the row's combination of categorical
    values is known, else from CatBoost. Measured on a 400-tree model, one row, hot loop:
    predict ~200 -> ~110 -> ~16 us; approximate SHAP ~4-5 ms -> ~25 us.

    For a scikit-learn baseline the call is ``predict_proba`` itself."""

    __slots__ = ("_model", "_features", "_is_cat", "_cat_indices", "_baseline", "_leaf", "_pool")

    def __init__(self, model: Any) -> None:
        inner = model.model if isinstance(model, TrainedModel) else model
        self._baseline = model if hasattr(inner, "predict_scores") else None
        self._leaf: Any = None  # LeafEvaluator | False (not applicable) once built
        if self._baseline is not None:
            return
        from catboost import Pool  # once: an import statement per call cost ~5 us

        self._pool = Pool
        self._model, features, categorical = model_signature(model)
        cat_set = frozenset(categorical)
        self._features = tuple(features)
        self._is_cat = tuple(name in cat_set for name in features)
        self._cat_indices = [i for i, cat in enumerate(self._is_cat) if cat]

    def __call__(self, row: Mapping[str, Any]) -> float:
        return self.predict(row)[0]

    def predict(self, row: Mapping[str, Any]) -> tuple[float, Any]:
        """(score, the row as ``contributions`` takes it, or None when it cannot explain)."""
        if self._baseline is not None:
            return float(predict_proba(self._baseline, row, allow_missing=True)[0]), None
        data = _rows_from_dicts((row,), self._features, self._is_cat, allow_missing=True)
        leaf = self._leaf if self._leaf is not None else self._build_leaf_evaluator()
        if not leaf:
            pool = self._pool(data, cat_features=self._cat_indices, thread_count=1)
            score = self._model.predict(pool, prediction_type="Probability", thread_count=1)
            return float(score[0, 1]), None
        indexer = leaf.indexer
        leaves = indexer.leaves(data[0]) if indexer is not None else None
        if leaves is None:  # no indexer, or a combination of categories not learned yet
            leaves = leaf.leaves(self._pool(data, cat_features=self._cat_indices, thread_count=1))
            if indexer is not None:
                indexer.learn(data[0], leaves)
        return leaf.probability(leaves), (data[0], leaves)

    def contributions(self, explained: Any) -> tuple[np.ndarray, list[Any], tuple[str, ...]]:
        """(approximate SHAP value per feature, the model-input values, the features: the
        model's order) of the row ``predict`` returned ``explained`` for."""
        values, leaves = explained
        return self._leaf.contributions(leaves, len(self._features)), values, self._features

    def _build_leaf_evaluator(self) -> Any:
        from fraud_platform.lib.model.fast_eval import LeafEvaluator, probe_rows

        probes = probe_rows(self._model, self._is_cat)
        self._leaf = LeafEvaluator.build(self._model, probes, self._cat_indices) or False
        return self._leaf
