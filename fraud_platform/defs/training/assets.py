"""Point-in-time training set, the CatBoost model, its evaluation and registration."""

import dataclasses
from datetime import timedelta

import dagster as dg

from fraud_platform import names
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import pipeline
from fraud_platform.lib.training.fit import TrainConfig
from fraud_platform.names import MODEL_NAME, TRAINING_SET_TABLE
from fraud_platform.resources import ModelStoreResource, WarehouseResource

GROUP = "training"
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
    input_versions = {
        g.versioned_name: delta.version(names.feature_table(g.versioned_name))
        for g in SERVICE.groups
    }
    group_rows = {
        g.versioned_name: delta.read(
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
    )
    frame = built.frame
    context.log.info(f"training frame: {frame.height} rows in {built.seconds:.1f}s")
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
            "unmatured_excluded": built.unmatured_excluded,
            "as_of": str(built.as_of),
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

    def pipeline_config(self) -> pipeline.PipelineConfig:
        values = self.model_dump()
        train = {k: v for k, v in values.items() if k in _TRAIN_FIELDS}
        rest = {k: v for k, v in values.items() if k not in _TRAIN_FIELDS}
        return dataclasses.replace(
            DEFAULTS, train=dataclasses.replace(DEFAULTS.train, **train), **rest
        )


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
    result = pipeline.train_and_evaluate(
        frame,
        SERVICE.numeric_features,
        list(SERVICE.categorical_features),
        config.pipeline_config(),
        log=context.log.info,
    )
    metrics = result.metrics
    tag = model_store.save_catboost(
        MODEL_NAME,
        result.trained.model,
        metadata=result.registry_metadata(SERVICE, TRAINING_SET_TABLE, set_version),
        labels={"feature_service": SERVICE.name, "stage": "candidate"},
        run_id=context.run.run_id,
    )
    context.log.info(
        f"registered {tag}: test AUC {metrics['auc_roc']:.4f} AP {metrics['average_precision']:.4f}"
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
            "feature_service": SERVICE.name,
            "test_auc_roc": metrics["auc_roc"],
            "test_average_precision": metrics["average_precision"],
            "precision_at_budget": metrics["precision_at_budget"],
            "recall_at_budget": metrics["recall_at_budget"],
            "thresholds": dg.MetadataValue.json(result.thresholds.to_dict()),
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
