"""The model registry: register, promote, roll back (a real BentoML store and a real Delta
registry table in a temp folder)."""

from pathlib import Path

import numpy as np
import pytest
from catboost import CatBoostClassifier

from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources.model_store import ModelStoreResource


def _model(seed: int) -> CatBoostClassifier:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] > 0).astype(int)
    return CatBoostClassifier(
        iterations=5, verbose=False, random_seed=seed, thread_count=1, allow_writing_files=False
    ).fit(x, y)


def _store(tmp_path: Path) -> ModelStoreResource:
    return ModelStoreResource(home=str(tmp_path / "bentoml"), delta=DeltaStore(str(tmp_path)))


def test_model_store_promote_and_rollback(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = store.save_catboost(
        "fraud_catboost",
        _model(1),
        metadata={"metrics": {"auc_roc": 0.9, "undefined": None}},
        labels={},
    )
    second = store.save_catboost(
        "fraud_catboost", _model(2), metadata={"metrics": {"auc_roc": 0.8}}, labels={}
    )
    assert store.get(first).info.metadata["metrics"] == {"auc_roc": 0.9}  # None dropped, not stored
    assert store.champion("fraud_catboost") is None

    store.promote(first)
    store.promote(second)
    assert store.champion("fraud_catboost") == second
    assert store.history("fraud_catboost") == [first, second]

    assert store.rollback("fraud_catboost") == first
    assert store.champion("fraud_catboost") == first
    with pytest.raises(ValueError, match="no previous champion"):
        store.rollback("fraud_catboost")


def test_model_store_refuses_an_unknown_tag(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(Exception, match="nope"):
        store.promote("fraud_catboost:nope")
    assert store.champion("fraud_catboost") is None
