"""Refit of the selected model on every matured row (the last days included)."""

import dataclasses

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.model.input import TrainedModel, predict_proba
from fraud_platform.lib.training.fit import time_split
from fraud_platform.lib.training.refit import refit_on_all
from tests.unit.training.synthetic import FAST


def test_refit_keeps_the_selected_trees_and_parameters(
    frame: pl.DataFrame, trained: TrainedModel
) -> None:
    refitted = refit_on_all(trained, frame)
    assert refitted.model.tree_count_ == trained.model.tree_count_
    assert refitted.features == trained.features
    assert refitted.categorical == trained.categorical
    params = refitted.params["catboost"]
    assert params["depth"] == FAST.depth and params["learning_rate"] == FAST.learning_rate
    assert "early_stopping_rounds" not in params


def test_refit_learns_from_the_days_the_split_kept_out(
    frame: pl.DataFrame, trained: TrainedModel
) -> None:
    split = time_split(frame, FAST)
    held_out = pl.col("event_time") >= split.validation_start
    flipped = frame.with_columns(
        pl.when(held_out).then(~pl.col("is_fraud")).otherwise(pl.col("is_fraud")).alias("is_fraud")
    )
    recent = frame.filter(held_out)
    plain = predict_proba(refit_on_all(trained, frame), recent)
    changed = predict_proba(refit_on_all(trained, flipped), recent)
    assert not np.allclose(plain, changed)


def test_refit_refuses_a_model_it_cannot_refit(trained: TrainedModel) -> None:
    other = dataclasses.replace(trained, model=object())
    with pytest.raises(ValueError, match="refit supports CatBoost models"):
        refit_on_all(other, pl.DataFrame())
