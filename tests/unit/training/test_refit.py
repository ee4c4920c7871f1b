"""Refit of the selected model on every matured row (the last days included)."""

import dataclasses

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.model.baseline import LOGREG
from fraud_platform.lib.model.input import TrainedModel, predict_proba, to_model_input
from fraud_platform.lib.serving.policy import Thresholds
from fraud_platform.lib.training.baselines import train_baseline
from fraud_platform.lib.training.fit import labels_of, time_split
from fraud_platform.lib.training.refit import matched_thresholds, refit_on_all
from tests.unit.training.synthetic import CATEGORICAL, FAST, NUMERIC


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
    with pytest.raises(ValueError, match="refit supports CatBoost and the baselines"):
        refit_on_all(other, pl.DataFrame())


def test_refit_of_a_baseline_fits_the_same_pipeline_on_the_held_out_days_too(
    frame: pl.DataFrame,
) -> None:
    split = time_split(frame, FAST)
    selected = train_baseline(LOGREG, split, NUMERIC, CATEGORICAL)
    held_out = pl.col("event_time") >= split.validation_start
    flipped = frame.with_columns(
        pl.when(held_out).then(~pl.col("is_fraud")).otherwise(pl.col("is_fraud")).alias("is_fraud")
    )
    recent = frame.filter(held_out)
    plain = refit_on_all(selected, frame)
    assert plain.params["refit"] is True and plain.model.kind == LOGREG
    assert plain.model.pipeline is not selected.model.pipeline
    assert (
        plain.model.pipeline.get_params()["classifier__C"]
        == (selected.model.pipeline.get_params()["classifier__C"])
    )
    changed = predict_proba(refit_on_all(selected, flipped), recent)
    assert not np.allclose(predict_proba(plain, recent), changed)


def test_matched_thresholds_flag_the_same_share_of_validation_traffic(frame: pl.DataFrame) -> None:
    from catboost import CatBoostClassifier

    split = time_split(frame, FAST)
    config = dataclasses.replace(FAST, iterations=60)
    params = {**config.catboost_params(), "early_stopping_rounds": None}
    model = CatBoostClassifier(**params)
    features = [*NUMERIC, *CATEGORICAL]
    model.fit(to_model_input(split.train, features, CATEGORICAL, label=labels_of(split.train)))
    selected = TrainedModel(model, tuple(features), tuple(CATEGORICAL), 59, {"catboost": params})
    refitted = refit_on_all(selected, frame)
    validation = split.validation
    ranked = np.sort(predict_proba(selected, validation))[::-1]
    after = predict_proba(refitted, validation)
    ranked_after = np.sort(after)[::-1]
    # cuts where neither model has a tie: the top n rows are exactly those >= the n-th score
    cuts = [
        n
        for n in range(1, 60)
        if ranked[n - 1] > ranked[n] and ranked_after[n - 1] > ranked_after[n]
    ]
    assert len(cuts) >= 2, cuts
    n_decline, n_review = cuts[0], cuts[-1]
    thresholds = Thresholds(
        review=float(ranked[n_review - 1]), decline=float(ranked[n_decline - 1])
    )
    assert int((ranked >= thresholds.review).sum()) == n_review
    matched = matched_thresholds(selected, refitted, validation, thresholds)
    assert int((after >= matched.review).sum()) == n_review
    assert int((after >= matched.decline).sum()) == n_decline
