"""Optuna hyper-parameter search for the CatBoost fraud model on time-ordered folds.

Only ``split.train`` is searched: the validation and test parts (thresholds, early stopping of
the final model, final evaluation) are never seen by the search. The final model is then trained
by ``training.train_model`` with ``to_train_config(result.best_params, base)``.

Folds (expanding window). The training period ``[first event, split.train_end)`` minus one gap
is cut into ``n_folds + 1`` equal blocks of length ``fold_len``. Fold ``k`` (0-based) has its
cut ``t_k = first + (k + 1) * fold_len`` and

* trains on the training rows with ``event_time < t_k``;
* skips the gap ``[t_k, t_k + gap)``;
* validates on ``[t_k + gap, t_k + gap + fold_len)``; the last fold ends at ``split.train_end``.

Objective: the mean average precision over the folds (each fold early-stops on its own
validation block, as the final model does on ``split.validation``; the fold AP is therefore
slightly optimistic in the same way for every trial).

Determinism: the sampler is ``TPESampler(seed=seed)`` and every CatBoost fit uses the base
config's seed and fixed ``thread_count``, so a fixed ``seed`` and ``n_trials`` give the same
trials and the same best parameters, **provided the trial count ends the search**. When
``time_budget_s`` ends it (Optuna's ``timeout``, checked between trials: a running trial is
always finished), how many trials ran depends on the machine's speed, and so may the result;
``SearchResult.stopped_by`` says which happened.

Optuna and CatBoost are imported lazily.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import LABEL_COLUMN, TIME_COLUMN, check_features, to_model_input
from fraud_platform.lib.training import fit as training
from fraud_platform.lib.training import metrics
from fraud_platform.lib.training.fit import Log, TrainConfig
from fraud_platform.lib.training.sampling import weights_of

CLASS_WEIGHTS: tuple[str | None, ...] = (None, "Balanced", "SqrtBalanced")
# Search space bounds (log scale for learning_rate and l2_leaf_reg).
DEPTH_RANGE = (4, 8)
LEARNING_RATE_RANGE = (0.02, 0.3)
L2_LEAF_REG_RANGE = (1.0, 30.0)
# Parameters the search may set: all are TrainConfig fields.
SEARCHED_FIELDS = ("depth", "learning_rate", "l2_leaf_reg", "auto_class_weights")


@dataclass(frozen=True)
class Fold:
    """One expanding-window fold: train ``[train_start, train_end)``, validate after a gap."""

    index: int
    train_start: datetime
    train_end: datetime
    validation_start: datetime
    validation_end: datetime
    train_rows: int
    train_positives: int
    validation_rows: int
    validation_positives: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "fold": self.index,
            "train_start": self.train_start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "validation_start": self.validation_start.isoformat(),
            "validation_end": self.validation_end.isoformat(),
            "train_rows": self.train_rows,
            "train_positives": self.train_positives,
            "validation_rows": self.validation_rows,
            "validation_positives": self.validation_positives,
        }


@dataclass(frozen=True)
class SearchResult:
    """Outcome of ``search_hyperparameters``.

    ``best_params`` holds TrainConfig field names (``depth``, ``learning_rate``, ``l2_leaf_reg``
    and, when searched, ``auto_class_weights``). ``trials``: one dict per finished trial
    (number, value, params, fold_values, best_iterations, seconds). ``folds``: the fold
    boundaries (datetimes) and sizes. ``stopped_by``: ``"trials"`` when all ``n_trials`` ran,
    ``"time_budget"`` when the budget stopped the search earlier.
    """

    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]]
    folds: list[dict[str, Any]]
    stopped_by: Literal["trials", "time_budget"]
    seconds: float
    n_trials: int = 0
    time_budget_s: float | None = None
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary (for asset and registry metadata)."""
        return {
            "best_params": dict(self.best_params),
            "best_value": round(float(self.best_value), 6),
            "trials": len(self.trials),
            "n_trials": self.n_trials,
            "time_budget_s": self.time_budget_s,
            "stopped_by": self.stopped_by,
            "seconds": round(self.seconds, 3),
            "seed": self.seed,
            "objective": "mean average precision over time-ordered folds of split.train",
            "folds": [_json_fold(f) for f in self.folds],
        }


def _json_fold(fold: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in fold.items()}


def to_train_config(best_params: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """``base`` with the searched parameters replaced (``dataclasses.replace``)."""
    base = base or TrainConfig()
    unknown = set(best_params) - set(SEARCHED_FIELDS)
    if unknown:
        raise ValueError(f"not searched TrainConfig fields: {sorted(unknown)}")
    return dataclasses.replace(base, **best_params)


# ---------------------------------------------------------------------------------------------
# folds


def time_folds(
    train: pl.DataFrame, train_end: datetime, n_folds: int, gap_days: float
) -> list[tuple[Fold, pl.DataFrame, pl.DataFrame]]:
    """Expanding-window folds of ``train`` (rows before ``train_end``); see the module doc.

    Raises ``ValueError`` when a fold's train or validation block has no row or no fraud.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if train.is_empty():
        raise ValueError("time_folds: the training part is empty")
    t = pl.col(TIME_COLUMN)
    train = train.filter(t < train_end).sort(TIME_COLUMN)
    first: datetime = train[TIME_COLUMN].min()  # type: ignore[assignment]
    gap = timedelta(days=gap_days)
    span = train_end - first - gap
    if span <= timedelta(0):
        raise ValueError(
            f"time_folds: the training part spans {(train_end - first) / timedelta(days=1):.2f} "
            f"days, not more than one gap of {gap_days:g} days"
        )
    fold_len = span / (n_folds + 1)
    folds = []
    for k in range(n_folds):
        cut = first + (k + 1) * fold_len
        validation_start = cut + gap
        validation_end = train_end if k == n_folds - 1 else validation_start + fold_len
        fold_train = train.filter(t < cut)
        fold_validation = train.filter((t >= validation_start) & (t < validation_end))
        fold = Fold(
            index=k,
            train_start=first,
            train_end=cut,
            validation_start=validation_start,
            validation_end=validation_end,
            train_rows=fold_train.height,
            train_positives=int(fold_train[LABEL_COLUMN].sum()),
            validation_rows=fold_validation.height,
            validation_positives=int(fold_validation[LABEL_COLUMN].sum()),
        )
        for name, rows, positives in (
            ("train", fold.train_rows, fold.train_positives),
            ("validation", fold.validation_rows, fold.validation_positives),
        ):
            if rows == 0 or positives == 0 or positives == rows:
                raise ValueError(
                    f"time_folds: fold {k} {name} block has {rows} rows and {positives} frauds; "
                    f"it needs both classes. Use fewer folds (n_folds={n_folds}), a smaller "
                    f"gap (gap_days={gap_days:g}) or more training data."
                )
        folds.append((fold, fold_train, fold_validation))
    return folds


# ---------------------------------------------------------------------------------------------
# search


def _format_params(params: dict[str, Any]) -> str:
    short = {"learning_rate": "lr", "l2_leaf_reg": "l2", "auto_class_weights": "weights"}
    parts = []
    for name, value in params.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{short.get(name, name)}={text}")
    return " ".join(parts)


def search_hyperparameters(
    split: training.Split,
    numeric_features: Sequence[str],
    categorical_features: Sequence[str],
    base: TrainConfig | None = None,
    *,
    n_trials: int = 20,
    time_budget_s: float | None = 120.0,
    n_folds: int = 3,
    seed: int = 42,
    search_class_weights: bool = True,
    log: Log | None = None,
) -> SearchResult:
    """Optuna TPE search maximising the mean fold AP on ``split.train`` (see the module doc).

    ``base`` supplies everything not searched: the iteration cap (``iterations``) with
    ``early_stopping_rounds``, ``thread_count``, the CatBoost ``seed``, ``gap_days`` (also the
    gap between a fold's train and validation blocks), ``eval_metric``, ``has_time``.
    ``auto_class_weights`` is searched over none/Balanced/SqrtBalanced unless
    ``search_class_weights=False`` or ``base.scale_pos_weight`` is set. ``time_budget_s=None``:
    no budget. ``log`` receives one line per finished trial.
    """
    import optuna
    from catboost import CatBoostClassifier

    base = base or TrainConfig()
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise ValueError(f"time_budget_s must be > 0 or None, got {time_budget_s}")
    check_features(numeric_features, categorical_features)
    features = [*numeric_features, *categorical_features]
    folds = time_folds(split.train, split.train_end, n_folds, base.gap_days)
    pools = [
        (
            to_model_input(
                fold_train,
                features,
                categorical_features,
                label=training.labels_of(fold_train),
                weight=weights_of(fold_train),
            ),
            to_model_input(
                fold_val, features, categorical_features, label=training.labels_of(fold_val)
            ),
            training.labels_of(fold_val).astype(bool),
            weights_of(fold_val),  # downsampled folds: AP on the weighted population
        )
        for _, fold_train, fold_val in folds
    ]
    weights = search_class_weights and base.scale_pos_weight is None
    if log:
        sizes = ", ".join(
            f"fold {f.index}: train {f.train_rows} ({f.train_positives} fraud) / "
            f"validation {f.validation_rows} ({f.validation_positives} fraud)"
            for f, _, _ in folds
        )
        budget = f"{time_budget_s:g}s" if time_budget_s is not None else "none"
        log(f"search: {n_trials} trials, time budget {budget}, {n_folds} folds ({sizes})")

    trials: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        started = time.perf_counter()
        params: dict[str, Any] = {
            "depth": trial.suggest_int("depth", *DEPTH_RANGE),
            "learning_rate": trial.suggest_float("learning_rate", *LEARNING_RATE_RANGE, log=True),
            "l2_leaf_reg": trial.suggest_float("l2_leaf_reg", *L2_LEAF_REG_RANGE, log=True),
        }
        if weights:
            params["auto_class_weights"] = trial.suggest_categorical(
                "auto_class_weights", list(CLASS_WEIGHTS)
            )
        cb_params = dataclasses.replace(base, **params).catboost_params()
        fold_values, best_iterations = [], []
        for train_pool, val_pool, y_val, w_val in pools:
            model = CatBoostClassifier(**cb_params)
            model.fit(train_pool, eval_set=val_pool, use_best_model=True)
            scores = model.predict(
                val_pool, prediction_type="Probability", thread_count=base.thread_count
            )[:, 1]
            fold_values.append(metrics.average_precision(y_val, scores, sample_weight=w_val))
            best_iterations.append(int(model.get_best_iteration()))
        value = float(np.mean(fold_values))
        seconds = time.perf_counter() - started
        trial.set_user_attr("fold_values", fold_values)
        trial.set_user_attr("best_iterations", best_iterations)
        trial.set_user_attr("seconds", seconds)
        trials.append(
            {
                "number": trial.number,
                "value": value,
                "params": params,
                "fold_values": [float(v) for v in fold_values],
                "best_iterations": best_iterations,
                "seconds": round(seconds, 3),
            }
        )
        if log:
            best = max(t["value"] for t in trials)
            log(
                f"trial {trial.number + 1}/{n_trials}: AP {value:.4f} (best {best:.4f}) "
                f"{_format_params(params)} iterations={best_iterations} {seconds:.1f}s"
            )
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, timeout=time_budget_s)
    seconds = time.perf_counter() - started
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RuntimeError("search: no trial completed")
    best = study.best_trial
    best_params = {name: best.params[name] for name in SEARCHED_FIELDS if name in best.params}
    stopped_by: Literal["trials", "time_budget"] = (
        "trials" if len(complete) >= n_trials else "time_budget"
    )
    best_value = float(best.value) if best.value is not None else math.nan
    if log:
        log(
            f"search done in {seconds:.1f}s ({len(complete)} trials, stopped by {stopped_by}): "
            f"best AP {best_value:.4f} with {_format_params(best_params)}"
        )
    return SearchResult(
        best_params=best_params,
        best_value=best_value,
        trials=trials,
        folds=[dataclasses.asdict(f) for f, _, _ in folds],
        stopped_by=stopped_by,
        seconds=seconds,
        n_trials=n_trials,
        time_budget_s=time_budget_s,
        seed=seed,
    )


__all__ = [
    "Fold",
    "SearchResult",
    "search_hyperparameters",
    "time_folds",
    "to_train_config",
]
