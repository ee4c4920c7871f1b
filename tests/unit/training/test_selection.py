"""Model selection: CatBoost and the baselines on one split; the best by validation AP wins."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.training.baselines import BaselineConfig
from fraud_platform.lib.training.pipeline import PipelineConfig, train_and_evaluate
from fraud_platform.lib.training.selection import ap_gain_standard_error, select_candidate
from tests.unit.training.synthetic import CATEGORICAL, FAST, NUMERIC, make_frame


@pytest.mark.parametrize(
    ("validation_ap", "chosen"),
    [
        ({"catboost": 0.61, "logreg": 0.55, "forest": 0.66}, "forest"),
        ({"catboost": 0.61, "logreg": 0.70, "forest": 0.66}, "logreg"),
        ({"catboost": 0.71, "logreg": 0.70, "forest": 0.66}, "catboost"),
        ({"catboost": math.nan, "logreg": 0.20, "forest": 0.10}, "logreg"),
    ],
)
def test_select_candidate_picks_the_best_validation_ap(
    validation_ap: dict[str, float], chosen: str
) -> None:
    selection = select_candidate(validation_ap, preference=("catboost", "logreg", "forest"))
    assert selection.chosen == chosen
    assert selection.reason.startswith(f"{chosen} has the best validation AP")


def test_select_candidate_breaks_ties_by_preference_and_refuses_no_defined_ap() -> None:
    tie = {"forest": 0.5, "catboost": 0.5, "logreg": 0.4}
    assert select_candidate(tie, preference=("catboost", "logreg", "forest")).chosen == "catboost"
    assert select_candidate(tie, preference=("forest",)).chosen == "forest"
    with pytest.raises(ValueError, match="no candidate has a defined validation AP"):
        select_candidate({"catboost": math.nan, "logreg": math.nan})


def test_a_baseline_replaces_catboost_only_when_it_wins_by_more_than_the_noise() -> None:
    ap = {"catboost": 0.60, "logreg": 0.65, "forest": 0.55}
    noisy = select_candidate(ap, ("catboost", "logreg", "forest"), {"logreg": 0.04, "forest": 0.1})
    assert noisy.chosen == "catboost"  # 0.05 gain < 2 x 0.04
    assert "logreg 0.6500 is not better than catboost 0.6000" in noisy.reason
    clear = select_candidate(ap, ("catboost", "logreg", "forest"), {"logreg": 0.02, "forest": 0.1})
    assert clear.chosen == "logreg"  # 0.05 gain > 2 x 0.02


def test_ap_gain_standard_error_is_zero_for_identical_scores_and_grows_with_noise() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(2000) < 0.05
    base = y * 0.5 + rng.random(2000)
    assert ap_gain_standard_error(y, base, base.copy()) == 0.0
    small = ap_gain_standard_error(y, base, base + rng.normal(0, 0.05, 2000))
    large = ap_gain_standard_error(y, base, base + rng.normal(0, 0.5, 2000))
    assert 0 < small < large


def test_train_and_evaluate_registers_the_candidate_with_the_best_validation_ap() -> None:
    frame = make_frame(n=3000, days=20.0)
    config = PipelineConfig(
        train=FAST,
        min_auc_roc=0.5,
        baselines=BaselineConfig(forest_trees=20, thread_count=1),
    )
    result = train_and_evaluate(frame, NUMERIC, CATEGORICAL, config)

    assert set(result.models) == {"catboost", "logreg", "forest"}
    validation = result.split.validation
    y = validation["is_fraud"].to_numpy()
    expected_ap = {
        kind: average_precision_score(y, predict_proba(model, validation))
        for kind, model in result.models.items()
    }
    best = max(expected_ap, key=lambda kind: expected_ap[kind])
    assert result.chosen == best
    assert result.trained is result.models[best]
    for kind, ap in expected_ap.items():
        assert result.candidates[kind]["validation_average_precision"] == pytest.approx(ap)
    test_y = result.split.test["is_fraud"].to_numpy()
    chosen_test_ap = average_precision_score(
        test_y, predict_proba(result.trained, result.split.test)
    )
    assert result.metrics["average_precision"] == pytest.approx(chosen_test_ap)
    metadata = result.registry_metadata(FRAUD_SCORING_V1, "training/set", 1)
    assert metadata["model_kind"] == best
    assert metadata["selection"]["chosen"] == best
    assert set(metadata["candidates"]) == {"catboost", "logreg", "forest"}
    assert "pr_curves_candidates" in result.plots
    table = result.candidates_markdown()
    assert all(f"| {kind} |" in table for kind in ("catboost", "logreg", "forest"))
    assert np.isfinite(result.candidates["forest"]["test_auc_roc"])


def test_the_scheduled_retrain_searches_within_its_time_budget() -> None:
    import dagster as dg

    from fraud_platform.defs.serving.assets import retrain_job, retrain_schedule
    from fraud_platform.defs.training.assets import ModelConfig

    defaults = PipelineConfig()
    assert defaults.scheduled_search_trials > 0 and defaults.search_trials == 0
    data = retrain_schedule.evaluate_tick(dg.build_schedule_context())
    (request,) = data.run_requests or []
    config = request.run_config["ops"]["models__fraud_catboost"]["config"]
    assert config == {
        "search_trials": defaults.scheduled_search_trials,
        "search_time_budget_s": defaults.scheduled_search_time_budget_s,
    }
    model = ModelConfig(**config).pipeline_config()
    assert model.search_trials == defaults.scheduled_search_trials
    assert model.search_time_budget_s == defaults.scheduled_search_time_budget_s
    assert retrain_schedule.job_name == retrain_job.name
