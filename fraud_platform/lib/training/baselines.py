"""Simple, strong baselines trained beside CatBoost on the same time split and features, and
the candidate record the selection reads.

* ``logreg``: per feature, median imputation plus a missing-value indicator (numeric) or one-hot
  encoding (categorical, unknown categories ignored); then every column standardised; then an
  L2 logistic regression.
* ``forest``: median imputation plus missing indicator (numeric) or ordinal codes (categorical,
  unknown -> -1); then a random forest. Each tree sees a bootstrap sample of at most
  ``forest_max_samples`` rows (the forest's cost grows with rows x trees; this bounds it).

Both fit on ``split.train`` only (no early stopping: ``split.validation`` stays unseen, while
CatBoost early-stops on it, which makes CatBoost's validation AP slightly optimistic). One
column transformer per feature, so each output column's feature is known (``column_owner``)
for importances and explanations. scikit-learn is imported lazily.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from fraud_platform.lib.model.baseline import FOREST, LOGREG, SklearnModel
from fraud_platform.lib.model.input import LABEL_COLUMN, TrainedModel, check_features
from fraud_platform.lib.training.fit import Log, Split, labels_of
from fraud_platform.lib.training.sampling import fit_weights


@dataclass(frozen=True)
class BaselineConfig:
    """Settings of the two baselines (``kinds`` says which ones are trained)."""

    kinds: tuple[str, ...] = (LOGREG, FOREST)
    logreg_c: float = 1.0
    logreg_max_iter: int = 2000
    forest_trees: int = 100
    forest_min_samples_leaf: int = 10
    forest_max_samples: int = 100_000
    seed: int = 42
    thread_count: int = 2

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in (LOGREG, FOREST)]
        if unknown:
            raise ValueError(f"unknown baseline kinds {unknown}; known: {(LOGREG, FOREST)}")
        if self.forest_trees < 1 or self.forest_max_samples < 1 or self.logreg_c <= 0:
            raise ValueError("forest_trees, forest_max_samples and logreg_c must be positive")


def _preprocess(kind: str, numeric: Sequence[str], categorical: Sequence[str]) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    parts: list[tuple[str, Any, list[str]]] = [
        (
            f"num_{i}",
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            [name],
        )
        for i, name in enumerate(numeric)
    ]
    for i, name in enumerate(categorical):
        encoder = (
            OneHotEncoder(handle_unknown="ignore", sparse_output=False)
            if kind == LOGREG
            else OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        )
        parts.append((f"cat_{i}", encoder, [name]))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def _column_owner(preprocess: Any, features: Sequence[str]) -> tuple[int, ...]:
    """Index in ``features`` of the feature behind each column the fitted transformer emits."""
    index = {name: i for i, name in enumerate(features)}
    owner: list[int] = []
    for _, transformer, columns in preprocess.transformers_:
        if transformer == "drop":
            continue
        width = len(transformer.get_feature_names_out(columns))
        owner += [index[columns[0]]] * width
    return tuple(owner)


def train_baseline(
    kind: str,
    split: Split,
    numeric_features: Sequence[str],
    categorical_features: Sequence[str],
    config: BaselineConfig | None = None,
    log: Log | None = None,
) -> TrainedModel:
    """Fit one baseline (``logreg`` or ``forest``) on ``split.train``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    config = config or BaselineConfig()
    check_features(numeric_features, categorical_features)
    features = (*numeric_features, *categorical_features)
    preprocess = _preprocess(kind, numeric_features, categorical_features)
    params: dict[str, Any]
    if kind == LOGREG:
        params = {"C": config.logreg_c, "max_iter": config.logreg_max_iter}
        steps = [
            ("preprocess", preprocess),
            ("scale", StandardScaler()),
            ("classifier", LogisticRegression(**params)),
        ]
    elif kind == FOREST:
        rows = split.train.height
        params = {
            "n_estimators": config.forest_trees,
            "min_samples_leaf": config.forest_min_samples_leaf,
            "max_samples": min(config.forest_max_samples, rows),
            "max_features": "sqrt",
            "n_jobs": config.thread_count,
            "random_state": config.seed,
        }
        steps = [("preprocess", preprocess), ("classifier", RandomForestClassifier(**params))]
    else:
        raise ValueError(f"no baseline of kind {kind!r}")
    pipeline = Pipeline(steps)
    wrapper = SklearnModel(pipeline, features, tuple(categorical_features), kind, ())
    train_frame = wrapper.frame(split.train)
    if log:
        log(
            f"training {kind} on {split.train.height} rows "
            f"({int(split.train[LABEL_COLUMN].sum())} fraud); {len(features)} features"
        )
    started = time.perf_counter()
    pipeline.fit(train_frame, labels_of(split.train), **fit_weights(split.train))
    seconds = time.perf_counter() - started
    if log:
        log(f"{kind} done in {seconds:.1f}s")
    fitted = SklearnModel(
        pipeline,
        features,
        tuple(categorical_features),
        kind,
        _column_owner(pipeline.named_steps["preprocess"], features),
    )
    return TrainedModel(
        model=fitted,
        features=features,
        categorical=tuple(categorical_features),
        best_iteration=0,
        params={**asdict(config), "kind": kind, "sklearn": params},
        train_seconds=seconds,
        kind=kind,
    )


def train_baselines(
    split: Split,
    numeric_features: Sequence[str],
    categorical_features: Sequence[str],
    config: BaselineConfig | None = None,
    log: Log | None = None,
) -> dict[str, TrainedModel]:
    """Every baseline of ``config.kinds``, by kind."""
    config = config or BaselineConfig()
    return {
        kind: train_baseline(kind, split, numeric_features, categorical_features, config, log)
        for kind in config.kinds
    }


__all__ = ["BaselineConfig", "train_baseline", "train_baselines"]
