"""Time-based split, CatBoost training, and the one model-input conversion used everywhere.

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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
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
# Inputs up to this many rows are converted row-wise (no pandas) and predicted on one thread.
SMALL_INPUT_ROWS = 256

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and split sizes.

    Class imbalance: ``auto_class_weights`` ("Balanced", "SqrtBalanced" or None) unless
    ``scale_pos_weight`` is set, which then replaces it. Either way the scores are not calibrated
    probabilities of fraud: choose thresholds on the validation split (``choose_thresholds``).
    ``has_time=True`` makes CatBoost's ordered statistics follow the time order of the rows.
    """

    iterations: int = 400
    learning_rate: float = 0.08
    depth: int = 6
    l2_leaf_reg: float = 3.0
    seed: int = 42
    early_stopping_rounds: int = 50
    thread_count: int = 2
    gap_days: float = 1.0
    test_days: float = 5.0
    validation_days: float = 3.0
    auto_class_weights: str | None = "Balanced"
    scale_pos_weight: float | None = None
    eval_metric: str = "PRAUC:use_weights=false"
    has_time: bool = True
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.gap_days < 0:
            raise ValueError(f"gap_days must be >= 0, got {self.gap_days}")
        if self.test_days <= 0 or self.validation_days <= 0:
            raise ValueError("test_days and validation_days must be > 0")
        if self.scale_pos_weight is not None and self.scale_pos_weight <= 0:
            raise ValueError(f"scale_pos_weight must be > 0, got {self.scale_pos_weight}")
        if self.auto_class_weights not in (None, "Balanced", "SqrtBalanced"):
            raise ValueError(
                f"auto_class_weights must be None, 'Balanced' or 'SqrtBalanced', "
                f"got {self.auto_class_weights!r}"
            )

    def catboost_params(self) -> dict[str, Any]:
        """Keyword arguments for ``CatBoostClassifier``."""
        params: dict[str, Any] = {
            "iterations": self.iterations,
            "learning_rate": self.learning_rate,
            "depth": self.depth,
            "l2_leaf_reg": self.l2_leaf_reg,
            "random_seed": self.seed,
            "thread_count": self.thread_count,
            "loss_function": "Logloss",
            "eval_metric": self.eval_metric,
            "early_stopping_rounds": self.early_stopping_rounds,
            "has_time": self.has_time,
            "logging_level": "Silent",
            "allow_writing_files": False,
        }
        if self.scale_pos_weight is not None:
            params["scale_pos_weight"] = self.scale_pos_weight
        elif self.auto_class_weights is not None:
            params["auto_class_weights"] = self.auto_class_weights
        return params


# ---------------------------------------------------------------------------------------------
# time split


@dataclass(frozen=True)
class Split:
    """train | gap | validation | gap | test, by ``event_time``.

    Intervals are half-open: train ``< train_end``; validation ``[validation_start,
    validation_end)``; test ``[test_start, test_end]`` where ``test_end`` is the last event.
    """

    train: pl.DataFrame
    validation: pl.DataFrame
    test: pl.DataFrame
    train_end: datetime
    validation_start: datetime
    validation_end: datetime
    test_start: datetime
    test_end: datetime
    gap_rows: int = 0  # rows dropped because they fall inside a gap

    def summary(self) -> dict[str, Any]:
        """Rows, positives and boundaries of each part (JSON-serialisable)."""

        def part(frame: pl.DataFrame) -> dict[str, int]:
            return {"rows": frame.height, "positives": int(frame[LABEL_COLUMN].sum())}

        return {
            "train": part(self.train),
            "validation": part(self.validation),
            "test": part(self.test),
            "train_end": self.train_end.isoformat(),
            "validation_start": self.validation_start.isoformat(),
            "validation_end": self.validation_end.isoformat(),
            "test_start": self.test_start.isoformat(),
            "test_end": self.test_end.isoformat(),
            "gap_rows": self.gap_rows,
        }


def time_split(frame: pl.DataFrame, config: TrainConfig | None = None) -> Split:
    """Split a point-in-time training frame by ``event_time``; the test part is the latest.

    Rows inside the gaps are dropped. Raises ``ValueError`` if a part is empty or has no fraud.
    """
    config = config or TrainConfig()
    for column in (TIME_COLUMN, LABEL_COLUMN):
        if column not in frame.columns:
            raise ValueError(f"time_split: the frame has no {column!r} column")
        if frame[column].null_count():
            raise ValueError(f"time_split: {column!r} has {frame[column].null_count()} nulls")
    if frame.is_empty():
        raise ValueError("time_split: the training frame is empty")
    order = [TIME_COLUMN, ID_COLUMN] if ID_COLUMN in frame.columns else [TIME_COLUMN]
    frame = frame.sort(order)
    first: datetime = frame[TIME_COLUMN].min()  # type: ignore[assignment]
    last: datetime = frame[TIME_COLUMN].max()  # type: ignore[assignment]
    gap = timedelta(days=config.gap_days)
    test_start = last - timedelta(days=config.test_days)
    validation_end = test_start - gap
    validation_start = validation_end - timedelta(days=config.validation_days)
    train_end = validation_start - gap

    t = pl.col(TIME_COLUMN)
    train = frame.filter(t < train_end)
    validation = frame.filter((t >= validation_start) & (t < validation_end))
    test = frame.filter(t >= test_start)

    needed = config.test_days + config.validation_days + 2 * config.gap_days
    span = (last - first) / timedelta(days=1)
    for name, part, start, end in (
        ("train", train, first, train_end),
        ("validation", validation, validation_start, validation_end),
        ("test", test, test_start, last),
    ):
        problem = None
        if part.is_empty():
            problem = "has no rows"
        elif not part[LABEL_COLUMN].any():
            problem = f"has {part.height} rows but no positive (is_fraud) label"
        if problem:
            raise ValueError(
                f"time_split: the {name} part [{start.isoformat()}, {end.isoformat()}] {problem}. "
                f"The frame spans {span:.2f} days ({first.isoformat()} .. {last.isoformat()}); "
                f"test_days={config.test_days}, validation_days={config.validation_days} and two "
                f"gaps of gap_days={config.gap_days} need more than {needed:g} days with fraud "
                f"in every part."
            )
    return Split(
        train=train,
        validation=validation,
        test=test,
        train_end=train_end,
        validation_start=validation_start,
        validation_end=validation_end,
        test_start=test_start,
        test_end=last,
        gap_rows=frame.height - train.height - validation.height - test.height,
    )


# ---------------------------------------------------------------------------------------------
# model input


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


def _normalise_frame(
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
    allow_missing: bool = False,
) -> Pool:
    """A ``catboost.Pool`` with exactly the given feature order and the types described above.

    ``rows``: a polars frame, a list of dicts, or one dict. With dicts, a feature key that is
    absent raises ``KeyError`` unless ``allow_missing=True`` (then it counts as null).
    """
    from catboost import Pool

    cat_set = frozenset(categorical)
    data = _prepare(rows, features, cat_set, allow_missing)
    cat_indices = [i for i, name in enumerate(features) if name in cat_set]
    return Pool(data, label=label, cat_features=cat_indices, feature_names=list(features))


def _prepare(
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
        normalised = _normalise_frame(rows, features, cat_set)
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


# ---------------------------------------------------------------------------------------------
# training


@dataclass(frozen=True)
class TrainedModel:
    """A fitted CatBoost classifier plus what is needed to feed it."""

    model: CatBoostClassifier
    features: tuple[str, ...]
    categorical: tuple[str, ...]
    best_iteration: int
    params: dict[str, Any] = field(default_factory=dict)
    best_scores: dict[str, dict[str, float]] = field(default_factory=dict)
    train_seconds: float = 0.0

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
            "tree_count": int(self.model.tree_count_),
            "params": self.params,
            "best_scores": self.best_scores,
            "train_seconds": round(self.train_seconds, 3),
        }


class _ProgressCallback:
    """CatBoost ``after_iteration`` hook forwarding a line every ``every`` iterations."""

    def __init__(self, log: Log, every: int, total: int) -> None:
        self._log = log
        self._every = max(1, every)
        self._total = total

    def after_iteration(self, info: Any) -> bool:
        iteration = int(info.iteration)  # 1-based
        if iteration % self._every == 0 or iteration == self._total:
            parts = []
            for dataset, metrics in info.metrics.items():
                for metric, values in metrics.items():
                    parts.append(f"{dataset} {metric.split(':')[0]}={values[-1]:.5f}")
            self._log(f"iteration {iteration}/{self._total}: " + ", ".join(parts))
        return True


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


def train_model(
    split: Split,
    numeric_features: Sequence[str],
    categorical_features: Sequence[str],
    config: TrainConfig | None = None,
    log: Log | None = None,
) -> TrainedModel:
    """Fit a CatBoost classifier on ``split.train`` with early stopping on ``split.validation``.

    Deterministic for a given config (seed, thread_count) and input. The model is shrunk to its
    best validation iteration. Feature order = numeric features then categorical features.
    """
    from catboost import CatBoostClassifier

    config = config or TrainConfig()
    check_features(numeric_features, categorical_features)
    features = [*numeric_features, *categorical_features]
    train_pool = to_model_input(
        split.train, features, categorical_features, label=labels_of(split.train)
    )
    validation_pool = to_model_input(
        split.validation, features, categorical_features, label=labels_of(split.validation)
    )
    params = config.catboost_params()
    model = CatBoostClassifier(**params)
    callbacks = [_ProgressCallback(log, config.log_every, config.iterations)] if log else None
    if log:
        log(
            f"training CatBoost on {split.train.height} rows "
            f"({int(split.train[LABEL_COLUMN].sum())} fraud), validating on "
            f"{split.validation.height} rows; {len(features)} features "
            f"({len(categorical_features)} categorical)"
        )
    started = time.perf_counter()
    model.fit(train_pool, eval_set=validation_pool, use_best_model=True, callbacks=callbacks)
    seconds = time.perf_counter() - started
    best_iteration = int(model.get_best_iteration())
    best_scores = {
        dataset: {metric: float(value) for metric, value in metrics.items()}
        for dataset, metrics in model.get_best_score().items()
    }
    if log:
        log(
            f"done in {seconds:.1f}s: best iteration {best_iteration}, "
            f"{model.tree_count_} trees, best scores {best_scores}"
        )
    return TrainedModel(
        model=model,
        features=tuple(features),
        categorical=tuple(categorical_features),
        best_iteration=best_iteration,
        params={**asdict(config), "catboost": params},
        best_scores=best_scores,
        train_seconds=seconds,
    )


def labels_of(frame: pl.DataFrame) -> np.ndarray:
    return frame[LABEL_COLUMN].cast(pl.Int8).to_numpy()


# ---------------------------------------------------------------------------------------------
# scoring


def _model_signature(model: Any) -> tuple[Any, list[str], list[str]]:
    """(catboost model, feature order, categorical features) of a TrainedModel or a raw model."""
    if isinstance(model, TrainedModel):
        return model.model, list(model.features), list(model.categorical)
    features = list(model.feature_names_)
    categorical = [features[i] for i in model.get_cat_feature_indices()]
    return model, features, categorical


def predict_proba(
    model: TrainedModel | CatBoostClassifier,
    rows: pl.DataFrame | Sequence[Mapping[str, Any]] | Mapping[str, Any],
    *,
    allow_missing: bool = False,
    thread_count: int = 2,
) -> np.ndarray:
    """Fraud score (probability of the positive class) per row, as a float64 array.

    Same conversion (``to_model_input``) for batch frames and single online requests. Inputs
    of up to ``SMALL_INPUT_ROWS`` rows are predicted on one thread.
    """
    cb_model, features, categorical = _model_signature(model)
    pool = to_model_input(rows, features, categorical, allow_missing=allow_missing)
    threads = 1 if pool.num_row() <= SMALL_INPUT_ROWS else thread_count
    return cb_model.predict(pool, prediction_type="Probability", thread_count=threads)[:, 1]


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
    from catboost import Pool

    cb_model, features, categorical = _model_signature(model)
    cat_set = frozenset(categorical)
    values = _prepare(row, features, cat_set, allow_missing)[0]
    pool = Pool(
        [values],
        cat_features=[i for i, name in enumerate(features) if name in cat_set],
        feature_names=list(features),
    )
    shap = cb_model.get_feature_importance(
        pool, type="ShapValues", thread_count=1, shap_calc_type=shap_calc_type
    )
    contributions = np.asarray(shap)[0, :-1]  # the last column is the expected value
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
    cb_model, features, categorical = _model_signature(model)
    if frame.height > max_rows:
        rng = np.random.default_rng(seed)
        index = np.sort(rng.choice(frame.height, size=max_rows, replace=False))
        frame = frame[index.tolist()]
    values = _normalise_frame(frame, features, frozenset(categorical))
    pool = to_model_input(values, features, categorical)
    shap = np.asarray(
        cb_model.get_feature_importance(pool, type="ShapValues", thread_count=thread_count),
        dtype=np.float64,
    )
    return shap[:, :-1], values, features
