"""Point-in-time training set, the CatBoost model, its evaluation and registration."""

import dataclasses
from datetime import datetime, timedelta

import dagster as dg

from fraud_platform import names
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import pipeline
from fraud_platform.lib.training.backtest import as_utc
from fraud_platform.lib.training.fit import TrainConfig
from fraud_platform.lib.training.refit import matched_thresholds, refit_on_all
from fraud_platform.lib.training.sampling import DEFAULT_MAX_TRAIN_ROWS, RowBudget
from fraud_platform.names import MODEL_NAME, TRAINING_SET_TABLE
from fraud_platform.resources import ModelStoreResource, WarehouseResource
from fraud_platform.settings import Settings

GROUP = "training"
SERVICE = FRAUD_SCORING_V1
QUALITY_CHECK = "fraud_catboost_meets_minimum_quality"
DEFAULT_SPLIT = TrainConfig()  # the model's split, whose newest days a budget keeps whole


class TrainingSetConfig(dg.Config):
    maturity_days: float = 7.0
    """A transaction counts as legitimate only once this long has passed without a fraud label."""
    as_of: str = ""
    """The cutoff (ISO date/time, UTC when no zone is given): train on the transactions and labels
    known then. Empty: FRAUD_PLATFORM_TRAINING_AS_OF if set, else the newest transaction."""
    max_train_rows: int = DEFAULT_MAX_TRAIN_ROWS
    """Row budget of the fitted part: above it, legitimate rows older than the model's
    validation and test days are downsampled and weighted by the inverse rate (every fraud and
    the newest days kept; ``lib/training/sampling.py``). 0: no budget."""

    def cutoff(self) -> datetime | None:
        if self.as_of.strip():
            return as_utc(self.as_of.strip())
        return Settings.from_env().training_as_of


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

    The clock is ``as_of``: the configured cutoff, by default the newest transaction in silver;
    labels that arrive later are not yet known. The Delta versions of every input are recorded.
    """
    input_versions = {
        g.versioned_name: delta.version(names.feature_table(g.versioned_name))
        for g in SERVICE.groups
    }
    # lazy: the point-in-time join collects one group's key, time and feature columns at a
    # time instead of every whole feature table at once
    group_rows = {
        g.versioned_name: delta.scan(
            names.feature_table(g.versioned_name), version=input_versions[g.versioned_name]
        )
        for g in SERVICE.groups
    }
    built = pipeline.build_training_set(
        warehouse.table("fct_transactions"),
        warehouse.table("fct_labels"),
        group_rows,
        SERVICE,
        maturity=timedelta(days=config.maturity_days),
        as_of=(cutoff := config.cutoff()),
        budget=RowBudget(config.max_train_rows, DEFAULT_SPLIT.evaluation_days)
        if config.max_train_rows > 0
        else None,
    )
    frame = built.frame
    sampled = built.downsampled.summary() if built.downsampled else {}
    context.log.info(f"training frame: {frame.height} rows in {built.seconds:.1f}s {sampled}")
    version = delta.overwrite(
        TRAINING_SET_TABLE,
        frame,
        {"as_of": built.as_of, "feature_service": SERVICE.name, "input_versions": input_versions},
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "positives": built.positives,
            "fraud_rate": round(built.positives / max(frame.height, 1), 5),
            "downsampled": dg.MetadataValue.json(sampled),
            "unmatured_excluded": built.unmatured_excluded,
            "as_of": str(built.as_of),
            "as_of_source": "configured cutoff" if cutoff else "newest transaction",
            "delta_version": version,
            "input_delta_versions": dg.MetadataValue.json(input_versions),
            "feature_service": SERVICE.name,
            "features": dg.MetadataValue.json(list(SERVICE.model_features)),
        }
    )


DEFAULTS = pipeline.PipelineConfig()
_TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


class ModelConfig(dg.Config):
    """The tunable subset of ``pipeline.PipelineConfig``; every default is that class's."""

    iterations: int = DEFAULTS.train.iterations
    learning_rate: float = DEFAULTS.train.learning_rate
    depth: int = DEFAULTS.train.depth
    seed: int = DEFAULTS.train.seed
    test_days: float = DEFAULTS.train.test_days
    validation_days: float = DEFAULTS.train.validation_days
    gap_days: float = DEFAULTS.train.gap_days
    review_rate: float = DEFAULTS.review_rate
    """Share of traffic the review team can look at: the review threshold flags this much."""
    review_budget_per_day: int = DEFAULTS.review_budget_per_day
    decline_precision: float = DEFAULTS.decline_precision
    min_auc_roc: float = DEFAULTS.min_auc_roc
    """Promotion gate: the candidate needs at least this test AUC..."""
    min_average_precision: float = DEFAULTS.min_average_precision
    """...and at least this test average precision."""
    search_trials: int = DEFAULTS.search_trials
    """Optuna hyper-parameter trials on time-ordered folds of the train part before the final
    fit; 0 = no search (the fixed parameters above)."""
    search_time_budget_s: float = DEFAULTS.search_time_budget_s
    """Stop the search after this long (checked between trials; a started trial finishes)."""
    search_folds: int = DEFAULTS.search_folds
    """Expanding-window folds of the train part used by the search."""
    baseline_kinds: list[str] = list(DEFAULTS.baselines.kinds)
    """Baselines trained beside CatBoost on the same split (logreg, forest); the candidate with
    the best validation AP is registered. Empty: CatBoost only."""
    forest_trees: int = DEFAULTS.baselines.forest_trees
    forest_max_samples: int = DEFAULTS.baselines.forest_max_samples
    """Rows in each tree's bootstrap sample, at most (bounds the forest's cost)."""
    refit: bool = False
    """After selection and the quality gate on held-out days, refit the selected model on every
    row of the training set (the newest matured days included: after a drift switch they are
    the only ones with the new traffic) and register that, with thresholds flagging the same
    validation shares (``lib/training/refit.py``). The held-out model is registered too
    (``heldout_tag``): the promotion gate compares it, not the refit, with the champion."""

    def pipeline_config(self) -> pipeline.PipelineConfig:
        values = self.model_dump()
        values.pop("refit")
        baselines = dataclasses.replace(
            DEFAULTS.baselines,
            kinds=tuple(values.pop("baseline_kinds")),
            forest_trees=values.pop("forest_trees"),
            forest_max_samples=values.pop("forest_max_samples"),
        )
        train = {k: v for k, v in values.items() if k in _TRAIN_FIELDS}
        rest = {k: v for k, v in values.items() if k not in _TRAIN_FIELDS}
        return dataclasses.replace(
            DEFAULTS,
            train=dataclasses.replace(DEFAULTS.train, **train),
            baselines=baselines,
            **rest,
        )


@dg.asset(
    key=["models", MODEL_NAME],
    group_name=GROUP,
    deps=[fraud_training_set],
    kinds={"catboost", "sklearn", "bentoml"},
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
    """The fraud model: CatBoost and the baselines (logistic regression, random forest) trained
    on one time split and feature set, shown side by side (``candidates`` and the PR curves of
    every candidate); the best by validation AP is evaluated on the latest period and registered
    in the BentoML model store (whatever its kind) with its training-set version, features,
    metrics and thresholds."""
    set_version = delta.version(TRAINING_SET_TABLE)
    frame = delta.read(TRAINING_SET_TABLE, version=set_version)
    result = pipeline.train_and_evaluate(
        frame,
        SERVICE.numeric_features,
        list(SERVICE.categorical_features),
        config.pipeline_config(),
        log=context.log.info,
    )
    metrics = result.metrics
    metadata = result.registry_metadata(SERVICE, TRAINING_SET_TABLE, set_version)
    model = result.trained.model
    if config.refit and result.passed:
        heldout_tag = model_store.save_model(
            MODEL_NAME,
            model,
            metadata=metadata,
            labels={"feature_service": SERVICE.name, "stage": names.HELDOUT_STAGE},
            run_id=context.run.run_id,
        )
        refitted = refit_on_all(result.trained, frame, log=context.log.info)
        thresholds = matched_thresholds(
            result.trained, refitted, result.split.validation, result.thresholds
        )
        model = refitted.model
        metadata = {
            **metadata,
            "thresholds": thresholds.to_dict(),
            "refit": {"rows": frame.height, "heldout_tag": heldout_tag},
        }
    tag = model_store.save_model(
        MODEL_NAME,
        model,
        metadata=metadata,
        labels={"feature_service": SERVICE.name, "stage": "candidate"},
        run_id=context.run.run_id,
    )
    context.log.info(
        f"registered {tag} ({result.chosen}: {result.selection_reason}): test AUC {metrics['auc_roc']:.4f} AP {metrics['average_precision']:.4f}"
    )
    gate = dg.AssetCheckResult(
        check_name=QUALITY_CHECK,
        passed=result.passed,
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
            "model_kind": result.chosen,
            "selection": result.selection_reason,
            "candidates": dg.MetadataValue.md(result.candidates_markdown()),
            "feature_service": SERVICE.name,
            "test_auc_roc": metrics["auc_roc"],
            "test_average_precision": metrics["average_precision"],
            "precision_at_budget": metrics["precision_at_budget"],
            "recall_at_budget": metrics["recall_at_budget"],
            "thresholds": dg.MetadataValue.json(metadata["thresholds"]),
            "refit": dg.MetadataValue.json(metadata.get("refit") or {}),
            "policy": dg.MetadataValue.json(metrics["policy"]),
            "metrics": dg.MetadataValue.json(metrics),
            "training_set_delta_version": set_version,
            "train_rows": result.split.train.height,
            "test_rows": result.split.test.height,
            "search": dg.MetadataValue.json(result.search),
            **{name: dg.MetadataValue.md(md) for name, md in result.plots.items()},
            "shap_mean_abs": dg.MetadataValue.json(result.shap_mean_abs),
        },
    )
