"""A refit challenger (it saw the test period) is compared with the champion through its
held-out twin: memorising the test period wins it nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from catboost import CatBoostClassifier

from fraud_platform.defs.serving.assets import PromotionConfig, decide_promotion
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training.promotion import comparison_period
from fraud_platform.names import MODEL_NAME, TRAINING_SET_TABLE
from fraud_platform.resources.model_store import ModelStoreResource
from tests.unit.training.synthetic import NUMERIC, make_frame

THRESHOLDS = {"review": 0.5, "decline": 0.9}


def fit(x: pd.DataFrame, y: np.ndarray, seed: int) -> CatBoostClassifier:
    model = CatBoostClassifier(iterations=60, depth=4, random_seed=seed, verbose=False)
    return model.fit(x, y)


def test_refit_is_defended_by_its_held_out_twin(tmp_path: Path) -> None:
    frame = make_frame(n=2000, days=16.0)
    delta = DeltaStore(str(tmp_path))
    delta.overwrite(TRAINING_SET_TABLE, frame)
    metadata = {
        "features": NUMERIC,
        "categorical_features": [],
        "thresholds": THRESHOLDS,
        "params": {"test_days": 3.0, "validation_days": 2.0, "gap_days": 0.5},
        "training_set_table": TRAINING_SET_TABLE,
        "training_set_delta_version": 0,
    }
    period = comparison_period(frame, metadata)
    x = frame.select(NUMERIC).to_pandas()
    y = frame["is_fraud"].to_numpy()
    store = ModelStoreResource(home=str(tmp_path / "bentoml"), delta=delta)
    earlier = (frame["event_time"] < period["event_time"].min()).to_numpy()
    champion = store.save_catboost(
        MODEL_NAME, fit(x[earlier], y[earlier], 1), metadata=metadata, labels={}
    )
    store.promote(champion)
    # the held-out twin learnt nothing (shuffled labels); the "refit" memorised the period
    rng = np.random.default_rng(0)
    heldout = store.save_catboost(
        MODEL_NAME, fit(x[earlier], rng.permutation(y[earlier]), 2), metadata=metadata, labels={}
    )
    refit_meta = {**metadata, "refit": {"rows": frame.height, "heldout_tag": str(heldout)}}
    in_period = ~earlier
    refit = store.save_catboost(
        MODEL_NAME, fit(x[in_period], y[in_period], 3), metadata=refit_meta, labels={}
    )
    config = PromotionConfig()
    defended = decide_promotion(str(refit), config, delta, store)
    assert not defended.promote, defended.reason
    # the same memorising model without a held-out twin would have been promoted
    plain = store.save_catboost(
        MODEL_NAME, fit(x[in_period], y[in_period], 3), metadata=metadata, labels={}
    )
    assert decide_promotion(str(plain), config, delta, store).promote
