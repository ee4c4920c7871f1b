"""The training pipeline behind the model asset, and its defaults declared once (the Dagster
configs read them from lib/training/pipeline.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fraud_platform.defs.serving.assets import BacktestConfig, PromotionConfig
from fraud_platform.defs.training.assets import ModelConfig
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.training import evaluation, metrics
from fraud_platform.lib.training.baselines import BaselineConfig
from fraud_platform.lib.training.fit import TrainConfig, time_split
from fraud_platform.lib.training.pipeline import PipelineConfig, train_and_evaluate
from tests.unit.training.synthetic import CATEGORICAL, FAST, NUMERIC, make_frame

PLOTS = (
    "pr_curve",
    "roc_curve",
    "score_distribution",
    "feature_importance",
    "shap_summary",
    "metric_over_time",
    "pr_curves_candidates",
)


def test_model_config_defaults_are_the_pipeline_defaults() -> None:
    assert ModelConfig().pipeline_config() == PipelineConfig()
    defaults = PipelineConfig()
    assert PromotionConfig().review_budget_per_day == defaults.review_budget_per_day
    assert BacktestConfig().review_budget_per_day == defaults.review_budget_per_day


# read by the model asset itself (a refit after selection), not by the training pipeline
ASSET_LEVEL_FIELDS = {"refit"}


def test_asset_level_model_config_fields_leave_the_pipeline_config_alone() -> None:
    assert ModelConfig(refit=True).pipeline_config() == ModelConfig().pipeline_config()


@pytest.mark.parametrize("name", sorted(set(ModelConfig.model_fields) - ASSET_LEVEL_FIELDS))
def test_model_config_field_reaches_the_pipeline_config(name: str) -> None:
    default = getattr(ModelConfig(), name)
    if isinstance(default, list):
        changed = default[:1]
    else:
        changed = default + 1 if isinstance(default, int) else default * 2 + 0.5
    config = ModelConfig(**{name: changed}).pipeline_config()
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if name == "baseline_kinds":
        assert config.baselines.kinds == tuple(changed)
    elif name.startswith("forest_"):
        assert getattr(config.baselines, name) == changed
    else:
        assert getattr(config.train if name in train_fields else config, name) == changed


def test_train_and_evaluate_publishes_test_metrics_thresholds_and_plots() -> None:
    frame = make_frame()
    config = PipelineConfig(
        train=FAST, review_budget_per_day=5, min_auc_roc=0.5, baselines=BaselineConfig(kinds=())
    )
    messages: list[str] = []
    result = train_and_evaluate(frame, NUMERIC, CATEGORICAL, config, log=messages.append)

    split = time_split(frame, FAST)
    assert result.split.summary() == split.summary()
    assert result.trained.features == tuple(NUMERIC + CATEGORICAL)
    scores = predict_proba(result.trained, split.test)
    y = split.test["is_fraud"].to_numpy()
    assert result.metrics["auc_roc"] == pytest.approx(metrics.roc_auc(y, scores))
    assert result.metrics["review_budget_per_day"] == 5
    expected = evaluation.choose_thresholds(
        split.validation["is_fraud"].to_numpy(),
        predict_proba(result.trained, split.validation),
        review_rate=config.review_rate,
        decline_precision=config.decline_precision,
    )
    assert result.thresholds == expected
    assert result.passed == (
        result.metrics["auc_roc"] >= 0.5 and result.metrics["average_precision"] >= 0.10
    )
    assert tuple(result.plots) == PLOTS
    assert all(md.startswith("![") for md in result.plots.values())
    assert set(result.shap_mean_abs) <= set(NUMERIC + CATEGORICAL)
    assert list(result.shap_mean_abs.values()) == sorted(result.shap_mean_abs.values())[::-1]
    assert result.search == {"enabled": False}
    assert messages and messages[0].startswith("training CatBoost")

    metadata = result.registry_metadata(FRAUD_SCORING_V1, "training/set", 3)
    assert metadata["features"] == NUMERIC + CATEGORICAL
    assert metadata["feature_service"] == FRAUD_SCORING_V1.name
    assert metadata["training_set_delta_version"] == 3
    assert metadata["thresholds"] == result.thresholds.to_dict()
    assert metadata["split"] == split.summary()
    assert metadata["params"]["iterations"] == FAST.iterations


def test_train_and_evaluate_fails_the_gate_below_the_minimum() -> None:
    config = PipelineConfig(train=FAST, min_auc_roc=1.01, search_trials=1, search_folds=2)
    result = train_and_evaluate(make_frame(), NUMERIC, CATEGORICAL, config)
    assert not result.passed
    assert result.search["enabled"] and result.search["trials"] == 1
    assert np.isfinite(result.metrics["average_precision"])
