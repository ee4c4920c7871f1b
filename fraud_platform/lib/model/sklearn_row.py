"""One row through a fitted baseline pipeline (``baseline.SklearnModel``) without scikit-learn's
per-call overhead: the same arithmetic, read out of the fitted steps once.

The baseline's ``ColumnTransformer`` has one transformer per feature (so every output column's
feature is known); scikit-learn validates input and output of each on every call. Scoring one
request took ~50 ms of CPU for the demo's 58-feature logistic regression (py-spy on the demo's
replay: ``predict_proba`` -> ``ColumnTransformer.transform`` -> per-transformer validation and
pandas indexing), which is what made the default demo's 2,000-request replay take minutes.
Here one row costs tens of microseconds: imputation, indicators, one-hot/ordinal codes and
standardisation are elementwise, so the transformed row is bit-identical to scikit-learn's; the
classifier is then called as scikit-learn calls it (the linear model's matrix product and
``expit``; each tree's ``predict_proba`` summed in estimator order).

Anything this module does not know (another transformer, encoder options) makes
``compile_row_scorer`` return None and the caller keeps the scikit-learn path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from fraud_platform.lib.model.input import _categorical_value, _numeric_value

RowScorer = Callable[[Mapping[str, Any]], float]
_NUMERIC, _ONE_HOT, _ORDINAL = 0, 1, 2


def _column_ops(preprocess: Any, features: Sequence[str]) -> list[tuple] | None:
    """Per transformer, in output order: (op, feature index, params), or None if unknown."""
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    index = {name: i for i, name in enumerate(features)}
    ops: list[tuple] = []
    for _, transformer, columns in preprocess.transformers_:
        if transformer == "drop":
            continue
        if len(columns) != 1 or columns[0] not in index:
            return None
        feature = index[columns[0]]
        if isinstance(transformer, SimpleImputer):
            if transformer.strategy == "constant":
                return None
            fill = float(transformer.statistics_[0])
            # keep_empty_features: a column empty at fit is imputed with 0
            fill = 0.0 if math.isnan(fill) else fill
            indicator = transformer.indicator_ is not None and len(transformer.indicator_.features_)
            ops.append((_NUMERIC, feature, fill, bool(indicator)))
        elif isinstance(transformer, OneHotEncoder):
            if transformer.drop is not None or transformer.handle_unknown != "ignore":
                return None
            if getattr(transformer, "_infrequent_enabled", False):
                return None
            categories = transformer.categories_[0]
            codes = {str(c): j for j, c in enumerate(categories)}
            ops.append((_ONE_HOT, feature, codes, len(categories)))
        elif isinstance(transformer, OrdinalEncoder):
            if transformer.handle_unknown != "use_encoded_value":
                return None
            codes = {str(c): float(j) for j, c in enumerate(transformer.categories_[0])}
            ops.append((_ORDINAL, feature, codes, float(transformer.unknown_value)))
        else:
            return None
    return ops


def _row_transform(ops: list[tuple], features: Sequence[str]) -> Callable:
    def transform(row: Mapping[str, Any]) -> np.ndarray:
        out: list[float] = []
        for op, feature, a, b in ops:
            name = features[feature]
            if op == _NUMERIC:
                value = _numeric_value(name, row.get(name))
                missing = math.isnan(value)
                out.append(a if missing else value)
                if b:
                    out.append(1.0 if missing else 0.0)
            elif op == _ONE_HOT:
                code = a.get(_categorical_value(row.get(name)))
                one_hot = [0.0] * b
                if code is not None:
                    one_hot[code] = 1.0
                out.extend(one_hot)
            else:
                out.append(a.get(_categorical_value(row.get(name)), b))
        return np.array([out], dtype=np.float64)

    return transform


def compile_row_transform(model: Any) -> Callable[[Mapping[str, Any]], np.ndarray] | None:
    """``pipeline[:-1].transform`` of one dict row as a 1 x n array, or None (module doc)."""
    from sklearn.preprocessing import StandardScaler

    pipeline = model.pipeline
    ops = _column_ops(pipeline.steps[0][1], model.features)
    if ops is None:
        return None
    transform = _row_transform(ops, model.features)
    middle = [step for _, step in pipeline.steps[1:-1]]
    if not middle:
        return transform
    if len(middle) != 1 or not isinstance(middle[0], StandardScaler):
        return None
    scaler = middle[0]
    mean = scaler.mean_ if scaler.with_mean else None
    scale = scaler.scale_ if scaler.with_std else None

    def scaled(row: Mapping[str, Any]) -> np.ndarray:
        x = transform(row)
        if mean is not None:
            x -= mean
        if scale is not None:
            x /= scale
        return x

    return scaled


def compile_row_scorer(model: Any) -> RowScorer | None:
    """The fraud probability of one dict row (missing features null), or None (module doc)."""
    from scipy.special import expit
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    transform = compile_row_transform(model)
    classifier = model.pipeline.steps[-1][1]
    if transform is None or list(classifier.classes_) != [0, 1]:
        return None
    if isinstance(classifier, LogisticRegression):
        coef_t, intercept = classifier.coef_.T, classifier.intercept_

        def linear(row: Mapping[str, Any]) -> float:
            return float(expit((transform(row) @ coef_t + intercept).ravel())[0])

        return linear
    if isinstance(classifier, RandomForestClassifier):
        return _forest_scorer(classifier.estimators_, transform)
    return None


def _forest_scorer(estimators: Sequence[Any], transform: Callable) -> RowScorer:
    """All trees walked at once, one level per step, over their nodes stacked in one array
    (``tree.predict_proba`` per tree costs ~50 us of call overhead: 5 ms for 100 trees)."""
    trees = [estimator.tree_ for estimator in estimators]
    offsets = np.cumsum([0] + [tree.node_count for tree in trees[:-1]])
    left = np.concatenate([t.children_left + o for t, o in zip(trees, offsets, strict=True)])
    right = np.concatenate([t.children_right + o for t, o in zip(trees, offsets, strict=True)])
    feature = np.concatenate([t.feature for t in trees])
    threshold = np.concatenate([t.threshold for t in trees])
    values = np.concatenate([t.value[:, 0, :2] for t in trees])
    # each tree's class probabilities as DecisionTreeClassifier.predict_proba normalises them
    normaliser = values.sum(axis=1)
    normaliser[normaliser == 0.0] = 1.0
    fraud = (values[:, 1] / normaliser).tolist()
    is_leaf = feature < 0
    safe_feature = np.where(is_leaf, 0, feature)
    roots = np.asarray(offsets, dtype=np.intp)
    count = len(trees)

    def forest(row: Mapping[str, Any]) -> float:
        # trees read float32 inputs against float64 thresholds, as scikit-learn does
        x = transform(row)[0].astype(np.float32)
        nodes = roots
        while not is_leaf[nodes].all():
            goes_left = x[safe_feature[nodes]] <= threshold[nodes]
            step = np.where(goes_left, left[nodes], right[nodes])
            nodes = np.where(is_leaf[nodes], nodes, step)
        total = 0.0
        for node in nodes.tolist():  # summed in estimator order, as with n_jobs=1
            total += fraud[node]
        return total / count

    return forest
