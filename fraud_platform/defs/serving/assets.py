"""Promotion: the model the scoring service serves."""

import dagster as dg

from fraud_platform.defs.training.assets import MODEL_NAME, fraud_catboost
from fraud_platform.resources import ModelStoreResource


@dg.asset(
    key=["serving", "fraud_catboost_champion"],
    group_name="serving",
    deps=[fraud_catboost],
    kinds={"bentoml"},
)
def fraud_catboost_champion(
    context: dg.AssetExecutionContext, model_store: ModelStoreResource
) -> dg.MaterializeResult:
    """The champion pointer the scoring service loads. Runs only after the candidate passed the
    blocking quality gate on ``models/fraud_catboost``."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey(["models", MODEL_NAME]))
    if event is None or event.asset_materialization is None:
        raise dg.Failure("models/fraud_catboost has never been materialized")
    tag = str(event.asset_materialization.metadata["model_tag"].value)
    previous = model_store.champion(MODEL_NAME)
    model_store.promote(tag)
    info = model_store.get(tag).info
    metrics = info.metadata.get("metrics", {})
    context.log.info(f"champion {previous} -> {tag}")
    return dg.MaterializeResult(
        metadata={
            "champion": tag,
            "previous_champion": previous or "",
            "test_auc_roc": metrics.get("auc_roc", 0.0),
            "test_average_precision": metrics.get("average_precision", 0.0),
            "model_store": model_store.home,
        }
    )


retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.groups("training", "serving", "monitoring"),
    description="Rebuild the training set, train and gate a candidate, promote it if it passes.",
)

retrain_schedule = dg.ScheduleDefinition(
    name="retrain_schedule", job=retrain_job, cron_schedule="0 3 * * *"
)
