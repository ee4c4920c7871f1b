"""The benchmarks' model: a depth-6 CatBoost on synthetic rows with exactly FRAUD_SCORING_V1's
features, and the metadata ``ScoringModel.from_metadata`` (and the model store) read with it.

Imports the platform and the tests' fixtures: the caller puts the repository root on
``sys.path`` first (unlike ``_common.py``, not importable from the Feast venv).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.model.input import to_model_input
from tests.serving.conftest import THRESHOLDS, synthetic_rows


def train(iterations: int) -> Any:
    from catboost import CatBoostClassifier

    categorical = list(FRAUD_SCORING_V1.categorical_features)
    features = [*FRAUD_SCORING_V1.numeric_features, *categorical]
    rows, labels = synthetic_rows(10_000, seed=3)
    model = CatBoostClassifier(
        iterations=iterations, depth=6, thread_count=2, verbose=0, allow_writing_files=False
    )
    model.fit(to_model_input(rows, features, categorical, label=labels))
    return model


def model_metadata(model: Any, thresholds: Mapping[str, float] = THRESHOLDS) -> dict[str, Any]:
    """The trained model's features, FRAUD_SCORING_V1's categorical ones and ``thresholds``."""
    return {
        "features": list(model.feature_names_),
        "categorical_features": list(FRAUD_SCORING_V1.categorical_features),
        "thresholds": thresholds,
    }


def bench_model(quick: bool) -> tuple[Any, dict[str, Any]]:
    """The model (``quick``: 100 trees, else 400) and its metadata with the tests' thresholds."""
    model = train(100 if quick else 400)
    return model, model_metadata(model)


def quick_arg() -> bool:
    """The command line of a benchmark whose only option is ``--quick``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    return bool(parser.parse_args().quick)
