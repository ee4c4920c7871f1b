"""Point-in-time training set, the CatBoost model, its evaluation and registration."""

import time
from datetime import timedelta

import dagster as dg
import numpy as np
import polars as pl

from fraud_platform.defs.features.assets import feature_table
from fraud_platform.lib import plots
from fraud_platform.lib.features.request import FRAUD_SCORING_V1
from fraud_platform.lib.features.training_frame import build_training_frame, label_transactions
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import evaluation, search
from fraud_platform.lib.training import fit as training
from fraud_platform.lib.training.versioning import code_version
from fraud_platform.resources import ModelStoreResource, WarehouseResource

GROUP = "training"
TRAINING_SET_TABLE = "training/fraud_training_set"
MODEL_NAME = "fraud_catboost"
SERVICE = FRAUD_SCORING_V1
QUALITY_CHECK = "fraud_catboost_meets_minimum_quality"


class TrainingSetConfig(dg.Config):
    maturity_days: float = 7.0
    """A transaction counts as legitimate only once this long has passed without a fraud label."""


@dg.asset(
    key=["training", "fraud_training_set"],
    group_name=GROUP,
    deps=[
        dg.AssetKey(["silver", "fct_transactions"]),
        dg.AssetKey(["silver", "fct_labels"]),
        *[dg.AssetKey(["features", g.versioned_name]) for g in SERVICE.groups],
    ],
    kinds={"polars", "delta"},
)
def fraud_training_set(
    context: dg.AssetExecutionContext,
    config: TrainingSetConfig,
    warehouse: WarehouseResource,
    delta: dg.ResourceParam[DeltaStore],
) -> dg.MaterializeResult:
    """Matured, labelled transactions with the features each could have known (point in time).

    The clock is the data's: ``as_of`` is the newest transaction in silver, so labels that
    arrive later are not yet known. The Delta versions of every input are recorded.
    """
    transactions = warehouse.table("fct_transactions")
    labels = warehouse.table("fct_labels")
    as_of = transactions["event_time"].max()
    labelled = label_transactions(
        transactions, labels, as_of=as_of, maturity=timedelta(days=config.maturity_days)
    )
    input_versions = {g.versioned_name: delta.version(feature_table(g)) for g in SERVICE.groups}
    group_rows = {
        g.versioned_name: delta.read(feature_table(g), version=input_versions[g.versioned_name])
        for g in SERVICE.groups
    }
    started = time.perf_counter()
    frame = build_training_frame(labelled.frame, group_rows, SERVICE)
    context.log.info(f"training frame: {frame.height} rows in {time.perf_counter() - started:.1f}s")
    version = delta.overwrite(
        TRAINING_SET_TABLE,
        frame,
        {"as_of": as_of, "feature_service": SERVICE.name, "input_versions": input_versions},
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "positives": labelled.positives,
            "fraud_rate": round(labelled.positives / max(frame.height, 1), 5),
            "unmatured_excluded": labelled.unmatured_excluded,
            "as_of": str(as_of),
            "delta_version": version,
            "input_delta_versions": dg.MetadataValue.json(input_versions),
            "feature_service": SERVICE.name,
            "features": dg.MetadataValue.json(list(SERVICE.model_features)),
        }
    )


class ModelConfig(dg.Config):
    iterations: int = 400
    learning_rate: float = 0.08
    depth: int = 6
    seed: int = 42
    test_days: float = 5.0
    validation_days: float = 3.0
    gap_days: float = 1.0
    review_rate: float = 0.01
    """Share of traffic the review team can look at: the review threshold flags this much."""
    review_budget_per_day: int = 50
    decline_precision: float = 0.9
    min_auc_roc: float = 0.75
    """Promotion gate: the candidate needs at least this test AUC..."""
    min_average_precision: float = 0.10
    """...and at least this test average precision."""
    search_trials: int = 0
    """Optuna hyper-parameter trials on time-ordered folds of the train part before the final
    fit; 0 = no search (the fixed parameters above)."""
    search_time_budget_s: float = 120.0
    """Stop the search after this long (checked between trials; a started trial finishes)."""
    search_folds: int = 3
    """Expanding-window folds of the train part used by the search."""


def _evaluation_metadata(
    test: pl.DataFrame, scores, config: ModelConfig, thresholds: evaluation.Thresholds
) -> tuple[evaluation.Evaluation, dict[str, dg.MetadataValue]]:
    y = test["is_fraud"].to_numpy()
    result = evaluation.evaluate(
        y,
        scores,
        event_time=test["event_time"].to_numpy(),
        fraud_type=test["fraud_type"].to_list(),
        channel=test["channel"].to_list(),
        review_budget_per_day=config.review_budget_per_day,
        thresholds=thresholds,
        decline_precision=config.decline_precision,
    )
    images = {
        "pr_curve": plots.png_markdown(plots.pr_curve_png(y, scores), "Precision-recall (test)"),
        "roc_curve": plots.png_markdown(plots.roc_curve_png(y, scores), "ROC (test)"),
        "score_distribution": plots.png_markdown(
            plots.score_distribution_png(y, scores), "Scores by class (test)"
        ),
    }
    return result, {name: dg.MetadataValue.md(md) for name, md in images.items()}


SHAP_SAMPLE_ROWS = 2000
SHAP_TOP_FEATURES = 15


def _explanation_metadata(
    trained: training.TrainedModel, test: pl.DataFrame, scores, config: ModelConfig
) -> dict[str, dg.MetadataValue]:
    """SHAP beeswarm and top mean |SHAP| on a test sample, and daily metrics of the test period."""
    shap, values, features = training.shap_values(
        trained, test, max_rows=SHAP_SAMPLE_ROWS, seed=config.seed
    )
    mean_abs = np.abs(shap).mean(axis=0)
    order = np.argsort(-mean_abs, kind="stable")[:SHAP_TOP_FEATURES]
    daily = evaluation.metrics_by_day(
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
    summary = plots.shap_summary_png(
        shap, values, features, max_features=SHAP_TOP_FEATURES, title="SHAP (test sample)"
    )
    return {
        "shap_summary": dg.MetadataValue.md(
            plots.png_markdown(summary, f"SHAP summary ({values.height} test rows)")
        ),
        "shap_mean_abs": dg.MetadataValue.json(
            {features[i]: round(float(mean_abs[i]), 6) for i in order}
        ),
        "metric_over_time": dg.MetadataValue.md(
            plots.png_markdown(over_time, "Daily metrics (test)")
        ),
    }


@dg.asset(
    key=["models", MODEL_NAME],
    group_name=GROUP,
    deps=[fraud_training_set],
    kinds={"catboost", "bentoml"},
    check_specs=[
        dg.AssetCheckSpec(
            QUALITY_CHECK,
            asset=dg.AssetKey(["models", MODEL_NAME]),
            blocking=True,
            description="Gate before promotion: the candidate clears minimum test AUC and AP.",
        )
    ],
)
def fraud_catboost(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    delta: dg.ResourceParam[DeltaStore],
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """CatBoost fraud model trained on a time split, evaluated on the latest period, registered
    in the BentoML model store with its training-set version, features, metrics and thresholds."""
    set_version = delta.version(TRAINING_SET_TABLE)
    frame = delta.read(TRAINING_SET_TABLE, version=set_version)
    train_config = training.TrainConfig(
        iterations=config.iterations,
        learning_rate=config.learning_rate,
        depth=config.depth,
        seed=config.seed,
        test_days=config.test_days,
        validation_days=config.validation_days,
        gap_days=config.gap_days,
    )
    split = training.time_split(frame, train_config)
    search_result = None
    if config.search_trials > 0:
        search_result = search.search_hyperparameters(
            split,
            SERVICE.numeric_features,
            list(SERVICE.categorical_features),
            train_config,
            n_trials=config.search_trials,
            time_budget_s=config.search_time_budget_s,
            n_folds=config.search_folds,
            seed=config.seed,
            log=context.log.info,
        )
        train_config = search.to_train_config(search_result.best_params, train_config)
    search_summary = (
        {"enabled": True, **search_result.summary()} if search_result else {"enabled": False}
    )
    trained = training.train_model(
        split,
        SERVICE.numeric_features,
        list(SERVICE.categorical_features),
        train_config,
        log=context.log.info,
    )
    val_scores = training.predict_proba(trained, split.validation)
    thresholds = evaluation.choose_thresholds(
        split.validation["is_fraud"].to_numpy(),
        val_scores,
        review_rate=config.review_rate,
        decline_precision=config.decline_precision,
    )
    test_scores = training.predict_proba(trained, split.test)
    result, images = _evaluation_metadata(split.test, test_scores, config, thresholds)
    importances = trained.model.get_feature_importance()
    images["feature_importance"] = dg.MetadataValue.md(
        plots.png_markdown(
            plots.feature_importance_png(trained.features, importances), "Feature importance"
        )
    )
    images.update(_explanation_metadata(trained, split.test, test_scores, config))
    metrics = result.to_dict()
    tag = model_store.save_catboost(
        MODEL_NAME,
        trained.model,
        metadata={
            "features": list(trained.features),
            "categorical_features": list(trained.categorical),
            "feature_service": SERVICE.name,
            "feature_group_versions": {g.name: g.version for g in SERVICE.groups},
            "training_set_table": TRAINING_SET_TABLE,
            "training_set_delta_version": set_version,
            "thresholds": thresholds.to_dict(),
            "metrics": metrics,
            "params": dict(trained.params),
            "best_iteration": trained.best_iteration,
            "code_version": code_version(),
            "split": split.summary(),
            "search": search_summary,
        },
        labels={"feature_service": SERVICE.name, "stage": "candidate"},
        run_id=context.run.run_id,
    )
    context.log.info(
        f"registered {tag}: test AUC {metrics['auc_roc']:.4f} AP {metrics['average_precision']:.4f}"
    )
    passed = (
        metrics["auc_roc"] >= config.min_auc_roc
        and metrics["average_precision"] >= config.min_average_precision
    )
    gate = dg.AssetCheckResult(
        check_name=QUALITY_CHECK,
        passed=passed,
        metadata={
            "test_auc_roc": metrics["auc_roc"],
            "test_average_precision": metrics["average_precision"],
            "min_auc_roc": config.min_auc_roc,
            "min_average_precision": config.min_average_precision,
            "model_tag": tag,
        },
    )
    return dg.MaterializeResult(
        check_results=[gate],
        metadata={
            "model_tag": tag,
            "test_auc_roc": metrics["auc_roc"],
            "test_average_precision": metrics["average_precision"],
            "precision_at_budget": metrics["precision_at_budget"],
            "recall_at_budget": metrics["recall_at_budget"],
            "thresholds": dg.MetadataValue.json(thresholds.to_dict()),
            "metrics": dg.MetadataValue.json(metrics),
            "training_set_delta_version": set_version,
            "train_rows": split.train.height,
            "test_rows": split.test.height,
            "search": dg.MetadataValue.json(search_summary),
            **images,
        },
    )
