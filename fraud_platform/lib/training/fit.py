"""Time-based split and CatBoost training.

The model input goes through ``fraud_platform.lib.model.input.to_model_input``, as it does when
scoring. CatBoost is imported lazily so that importing this module (e.g. from a Dagster code
location) stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import (
    ID_COLUMN,
    LABEL_COLUMN,
    TIME_COLUMN,
    TrainedModel,
    check_features,
    to_model_input,
)
from fraud_platform.lib.training.sampling import weights_of

Log = Callable[[str], None]


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and split sizes.

    Class imbalance: ``auto_class_weights`` ("Balanced", "SqrtBalanced" or None) unless
    ``scale_pos_weight`` is set, which then replaces it. None by default: on the thin data set
    (``benchmarks/own_data.py --quick``) "Balanced" made CatBoost early-stop at iteration 22 with
    a test AP of 0.30, against 0.54 unweighted (a random forest: 0.51); the search still tries
    the weights. Weighted or not, the scores are not calibrated probabilities of fraud: choose
    thresholds on the validation split (``choose_thresholds``). ``eval_metric``'s
    ``use_weights=false`` is dropped when no weight is set (CatBoost refuses it then).
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
    auto_class_weights: str | None = None
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

    @property
    def evaluation_days(self) -> float:
        """The newest days ``time_split`` keeps out of the fit (validation, test, both gaps)."""
        return self.test_days + self.validation_days + 2 * self.gap_days

    @property
    def weighted(self) -> bool:
        return self.scale_pos_weight is not None or self.auto_class_weights is not None

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
            "eval_metric": self.eval_metric
            if self.weighted
            else self.eval_metric.replace(":use_weights=false", ""),
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
# training


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
        split.train,
        features,
        categorical_features,
        label=labels_of(split.train),
        weight=weights_of(split.train),
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
