"""What the training assets compute, as plain data: the point-in-time training set, and the
candidate models (CatBoost and the baselines, ``baselines.py``) trained on one split, the best
by validation AP chosen, thresholded, evaluated and explained.

``PipelineConfig`` holds the defaults of every training setting (hyper-parameters and split sizes
through ``TrainConfig``, thresholds, budget, quality gate, search); the Dagster config of the
model asset takes its defaults from here, so each default is declared once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib import plots
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.services import SERVICE_METADATA_KEY
from fraud_platform.lib.features.training_frame import (
    build_training_frame,
    label_transactions,
    resolve_as_of,
)
from fraud_platform.lib.model.baseline import (
    CATBOOST,
    FOREST,
    KIND_METADATA_KEY,
    MODEL_KINDS,
)
from fraud_platform.lib.model.explain import shap_values
from fraud_platform.lib.model.input import TrainedModel, predict_proba
from fraud_platform.lib.serving.policy import Thresholds
from fraud_platform.lib.training import evaluation, promotion, search
from fraud_platform.lib.training.baselines import BaselineConfig, train_baselines
from fraud_platform.lib.training.fit import Log, Split, TrainConfig, time_split, train_model
from fraud_platform.lib.training.guards import require_group_features
from fraud_platform.lib.training.metrics import metrics_by_day
from fraud_platform.lib.training.sampling import (
    SAMPLE_WEIGHT,
    Downsampled,
    RowBudget,
    downsample_legit,
    require_unweighted,
)
from fraud_platform.lib.training.selection import ap_gain_standard_error, select_candidate
from fraud_platform.lib.training.versioning import code_version

SHAP_SAMPLE_ROWS = 2000
SHAP_TOP_FEATURES = 15


# ---------------------------------------------------------------------------------------------
# the training set


@dataclass(frozen=True)
class TrainingSet:
    frame: pl.DataFrame
    as_of: datetime
    positives: int
    unmatured_excluded: int
    seconds: float  # to join the features
    downsampled: Downsampled | None = None  # None: within the row budget (or no budget)


def build_training_set(
    transactions: pl.DataFrame,
    labels: pl.DataFrame,
    group_rows: Mapping[str, pl.DataFrame | pl.LazyFrame],
    service: FeatureService,
    maturity: timedelta,
    as_of: datetime | None = None,
    budget: RowBudget | None = None,
) -> TrainingSet:
    """Matured, labelled transactions joined point-in-time to the service's feature groups.

    The clock is ``as_of``: a cutoff (train on what was known then), by default the newest
    transaction. Labels that arrive later are not yet known; transactions after it are left out.
    Above ``budget``, legitimate rows before its whole days are downsampled, with weights,
    before the join (``sampling.py``); ``positives`` counts every fraud either way.
    """
    as_of = resolve_as_of(transactions, as_of)
    labelled = label_transactions(transactions, labels, as_of=as_of, maturity=maturity)
    rows, downsampled = labelled.frame, None
    if budget is not None:
        downsampled = downsample_legit(rows, budget)
        rows = downsampled.frame
        downsampled = downsampled if downsampled.dropped else None
    started = time.perf_counter()
    frame = build_training_frame(rows, group_rows, service)
    if SAMPLE_WEIGHT in rows.columns:
        frame = frame.with_columns(rows[SAMPLE_WEIGHT])
    require_group_features(frame, service)
    return TrainingSet(
        frame=frame,
        as_of=as_of,
        positives=labelled.positives,
        unmatured_excluded=labelled.unmatured_excluded,
        seconds=time.perf_counter() - started,
        downsampled=downsampled,
    )


# ---------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class PipelineConfig:
    train: TrainConfig = field(default_factory=TrainConfig)
    review_rate: float = 0.01
    """Share of traffic the review team can look at: the review threshold flags this much."""
    review_budget_per_day: int = 50
    decline_precision: float = 0.9
    min_auc_roc: float = 0.75
    """Promotion gate: the candidate needs at least this test AUC..."""
    min_average_precision: float = 0.10
    """...and at least this test average precision."""
    search_trials: int = 0
    """Optuna trials on time-ordered folds of the train part before the final fit; 0 = none."""
    search_time_budget_s: float = 120.0
    # > 0: a baseline replaces CatBoost only when its validation AP is higher by more than this
    # many paired-bootstrap standard errors (selection.select_candidate). Off by default: on the
    # demo's data 2.0 kept CatBoost (test AP 0.770 vs logreg's 0.691), but on a small data set it
    # kept a CatBoost that had learnt nothing (window AUC 0.5) over a working baseline
    selection_min_gain_se: float = 0.0
    search_folds: int = 3
    scheduled_search_trials: int = 30
    """The scheduled retrain searches CatBoost's hyper-parameters with this many trials..."""
    scheduled_search_time_budget_s: float = 900.0
    """...stopping after this long (a started trial finishes; see search.py)."""
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    """Baselines trained beside CatBoost (``baselines.kinds``; empty = CatBoost only). The
    candidate with the best validation AP is registered."""


@dataclass(frozen=True)
class TrainingResult:
    """The chosen candidate and everything the model asset registers and publishes."""

    trained: TrainedModel
    split: Split
    thresholds: Thresholds
    metrics: dict[str, Any]  # evaluation.Evaluation.to_dict() of the chosen model on the test part
    search: dict[str, Any]  # {"enabled": False} or {"enabled": True, **SearchResult.summary()}
    plots: dict[str, str]  # metadata name -> markdown embedding a PNG
    shap_mean_abs: dict[str, float]  # top features by mean |contribution| on a test sample
    passed: bool  # clears min_auc_roc and min_average_precision
    chosen: str = CATBOOST  # the kind selected by validation AP
    selection_reason: str = ""
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per kind: validation and test AP/AUC, train seconds (the side-by-side table)."""
    models: dict[str, TrainedModel] = field(default_factory=dict)  # every candidate, by kind

    def registry_metadata(
        self, service: FeatureService, training_set_table: str, training_set_version: int
    ) -> dict[str, Any]:
        """What the model store records with the candidate."""
        return {
            "features": list(self.trained.features),
            "categorical_features": list(self.trained.categorical),
            SERVICE_METADATA_KEY: service.name,  # what the scoring path reads online
            "feature_group_versions": {g.name: g.version for g in service.groups},
            "training_set_table": training_set_table,
            "training_set_delta_version": training_set_version,
            "thresholds": self.thresholds.to_dict(),
            "metrics": self.metrics,
            "params": dict(self.trained.params),
            "best_iteration": self.trained.best_iteration,
            "code_version": code_version(),
            "split": self.split.summary(),
            "search": self.search,
            KIND_METADATA_KEY: self.chosen,
            "selection": {"chosen": self.chosen, "reason": self.selection_reason},
            "candidates": self.candidates,
        }

    def candidates_markdown(self) -> str:
        """The candidates side by side (validation AP decides; test metrics for reference)."""
        lines = [
            "| model | validation AP | test AP | test AUC | train s | chosen |",
            "|---|---|---|---|---|---|",
        ]
        for kind, row in self.candidates.items():
            lines.append(
                f"| {kind} | {row['validation_average_precision']:.4f} | "
                f"{row['test_average_precision']:.4f} | {row['test_auc_roc']:.4f} | "
                f"{row['train_seconds']:.1f} | {'yes' if kind == self.chosen else ''} |"
            )
        return "\n".join(lines)


def train_candidates(
    split: Split,
    numeric: Sequence[str],
    categorical: Sequence[str],
    config: PipelineConfig,
    log: Log | None = None,
) -> tuple[dict[str, TrainedModel], dict[str, Any]]:
    """CatBoost (after the optional search) and the baselines, on the same split and features;
    returns (models by kind, the search summary)."""
    train_config = config.train
    search_summary: dict[str, Any] = {"enabled": False}
    if config.search_trials > 0:
        found = search.search_hyperparameters(
            split,
            numeric,
            categorical,
            train_config,
            n_trials=config.search_trials,
            time_budget_s=config.search_time_budget_s,
            n_folds=config.search_folds,
            seed=train_config.seed,
            log=log,
        )
        train_config = search.to_train_config(found.best_params, train_config)
        search_summary = {"enabled": True, **found.summary()}
    models = {CATBOOST: train_model(split, numeric, categorical, train_config, log=log)}
    models.update(train_baselines(split, numeric, categorical, config.baselines, log=log))
    return models, search_summary


def _candidate_row(trained: TrainedModel, split: Split, budget: int) -> dict[str, Any]:
    row: dict[str, Any] = {"train_seconds": round(trained.train_seconds, 3)}
    for part_name, part in (("validation", split.validation), ("test", split.test)):
        found = promotion.metrics(
            part["is_fraud"].to_numpy(),
            predict_proba(trained, part),
            part["event_time"].to_numpy(),
            review_budget_per_day=budget,
        )
        row[f"{part_name}_average_precision"] = found["average_precision"]
        row[f"{part_name}_auc_roc"] = found["auc_roc"]
    return row


def train_and_evaluate(
    frame: pl.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    config: PipelineConfig | None = None,
    log: Log | None = None,
) -> TrainingResult:
    """Time split, optional hyper-parameter search, CatBoost and the baselines fitted on the
    same split, the best by validation AP chosen; its thresholds chosen on the validation part,
    its evaluation (with the served policy's decisions on the test rows), plots and
    explanations on the test part (the latest period)."""
    config = config or PipelineConfig()
    split = time_split(frame, config.train)
    require_unweighted(split.validation, "validation part")
    require_unweighted(split.test, "test part")
    models, search_summary = train_candidates(split, numeric, categorical, config, log)
    candidates = {
        kind: _candidate_row(model, split, config.review_budget_per_day)
        for kind, model in models.items()
    }
    y_validation = split.validation["is_fraud"].to_numpy()
    validation_scores = {kind: predict_proba(m, split.validation) for kind, m in models.items()}
    incumbent = next(kind for kind in MODEL_KINDS if kind in models)
    selection = select_candidate(
        {kind: row["validation_average_precision"] for kind, row in candidates.items()},
        preference=MODEL_KINDS,
        gain_standard_errors={
            kind: ap_gain_standard_error(y_validation, validation_scores[incumbent], scores)
            for kind, scores in validation_scores.items()
            if kind != incumbent and config.selection_min_gain_se > 0
        },
        min_gain_se=config.selection_min_gain_se,
    )
    if log:
        log(f"model selection: {selection.reason}")
    trained = models[selection.chosen]
    thresholds = evaluation.choose_thresholds(
        y_validation,
        validation_scores[selection.chosen],
        review_rate=config.review_rate,
        decline_precision=config.decline_precision,
    )
    test = promotion.with_policy_columns(split.test)
    scores = predict_proba(trained, test)
    y = test["is_fraud"].to_numpy()
    metrics = evaluation.evaluate(
        y,
        scores,
        event_time=test["event_time"].to_numpy(),
        fraud_type=test["fraud_type"].to_list(),
        channel=test["channel"].to_list(),
        review_budget_per_day=config.review_budget_per_day,
        thresholds=thresholds,
        decline_precision=config.decline_precision,
        policy_rows=test,
    ).to_dict()
    images = {
        "pr_curve": plots.png_markdown(plots.pr_curve_png(y, scores), "Precision-recall (test)"),
        "roc_curve": plots.png_markdown(plots.roc_curve_png(y, scores), "ROC (test)"),
        "score_distribution": plots.png_markdown(
            plots.score_distribution_png(y, scores), "Scores by class (test)"
        ),
        "feature_importance": plots.png_markdown(
            plots.feature_importance_png(trained.features, trained.model.get_feature_importance()),
            f"Feature importance ({selection.chosen})",
        ),
    }
    explanation, shap_mean_abs = _explain(trained, test, scores, config)
    images.update(explanation)
    images["pr_curves_candidates"] = plots.png_markdown(
        plots.pr_curves_png(
            y, {kind: predict_proba(model, test) for kind, model in models.items()}
        ),
        "Precision-recall of every candidate (test)",
    )
    return TrainingResult(
        trained=trained,
        split=split,
        thresholds=thresholds,
        metrics=metrics,
        search=search_summary,
        plots=images,
        shap_mean_abs=shap_mean_abs,
        passed=(
            metrics["auc_roc"] >= config.min_auc_roc
            and metrics["average_precision"] >= config.min_average_precision
        ),
        chosen=selection.chosen,
        selection_reason=selection.reason,
        candidates=candidates,
        models=models,
    )


def _explain(
    trained: TrainedModel,
    test: pl.DataFrame,
    scores: np.ndarray,
    config: PipelineConfig,
) -> tuple[dict[str, str], dict[str, float]]:
    """(SHAP beeswarm and daily-metrics plots of the test period, top mean |SHAP| per feature
    on a test sample). A random forest has no per-row SHAP here (``model/baseline.py``): its
    beeswarm is left out and the top features are its global importances."""
    daily = metrics_by_day(
        test["is_fraud"].to_numpy(),
        scores,
        test["event_time"].to_numpy(),
        config.review_budget_per_day,
    )
    over_time = plots.metric_over_time_png(
        [d["day"] for d in daily],
        {m: [d[m] for d in daily] for m in ("auc_roc", "average_precision", "recall_at_budget")},
        f"Daily metrics (test; recall at {config.review_budget_per_day}/day)",
    )
    over_time_md = plots.png_markdown(over_time, "Daily metrics (test)")
    if trained.kind == FOREST:
        importance = trained.model.get_feature_importance()
        order = np.argsort(-importance, kind="stable")[:SHAP_TOP_FEATURES]
        top = {trained.features[i]: round(float(importance[i]), 6) for i in order}
        return {"metric_over_time": over_time_md}, top
    shap, values, features = shap_values(
        trained, test, max_rows=SHAP_SAMPLE_ROWS, seed=config.train.seed
    )
    mean_abs = np.abs(shap).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")[:SHAP_TOP_FEATURES]
    summary = plots.shap_summary_png(
        shap, values, features, max_features=SHAP_TOP_FEATURES, title="SHAP (test sample)"
    )
    images = {
        "shap_summary": plots.png_markdown(summary, f"SHAP summary ({values.height} test rows)"),
        "metric_over_time": over_time_md,
    }
    return images, {features[i]: round(float(mean_abs[i]), 6) for i in order}
