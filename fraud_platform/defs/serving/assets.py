"""Promotion (the champion-vs-challenger gate), backtest / shadow scoring, and retraining."""

from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.lib.features.services import FRAUD_SCORING_V1 as SERVICE
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import backtest as backtesting
from fraud_platform.lib.training import promotion
from fraud_platform.lib.training.pipeline import PipelineConfig
from fraud_platform.lib.training.sampling import require_unweighted
from fraud_platform.lib.training.window import apply_file_labels
from fraud_platform.names import BACKTEST_SCORES_TABLE, MODEL_NAME, TRAINING_SET_TABLE
from fraud_platform.resources import ModelStoreResource, WarehouseResource

GROUP = "serving"
GATE_CHECK = "challenger_beats_champion"
CHAMPION_KEY = dg.AssetKey(names.CHAMPION_ASSET.split("/"))
MODEL_KEY = dg.AssetKey(names.MODEL_ASSET.split("/"))
TRAINING_SET_KEY = dg.AssetKey(TRAINING_SET_TABLE.split("/"))
REVIEW_BUDGET_PER_DAY = PipelineConfig().review_budget_per_day


class PromotionConfig(dg.Config):
    margin: float = 0.005
    """The challenger must beat the champion's metric by at least this much (absolute)."""
    metric: str = "average_precision"
    """One of average_precision, auc_roc, precision_at_budget, recall_at_budget."""
    review_budget_per_day: int = REVIEW_BUDGET_PER_DAY


def _latest_candidate(context: dg.AssetExecutionContext) -> str:
    event = context.instance.get_latest_materialization_event(MODEL_KEY)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{names.MODEL_ASSET} has never been materialized")
    return str(event.asset_materialization.metadata["model_tag"].value)


def decide_promotion(
    challenger_tag: str,
    config: PromotionConfig,
    delta: DeltaStore,
    model_store: ModelStoreResource,
) -> promotion.GateDecision:
    """Score champion and challenger on the challenger's test period (same rows, same training
    set version the challenger was evaluated on) and apply ``promotion.compare``; each model's
    served policy (its registered thresholds and the rules) is measured on those rows too."""
    challenger_entry = model_store.get(challenger_tag)
    challenger_tag = str(challenger_entry.tag)
    metadata = dict(challenger_entry.info.metadata)
    champion_tag = model_store.champion(MODEL_NAME)
    table = str(metadata.get("training_set_table") or TRAINING_SET_TABLE)
    version = metadata.get("training_set_delta_version")
    frame = delta.read(table, version=int(version) if version is not None else None)
    period = promotion.comparison_period(frame, metadata)
    champion_model, champion_thresholds, problem = None, None, None
    if champion_tag is not None and champion_tag != challenger_tag:
        try:
            champion_model = model_store.load_catboost(champion_tag)
            champion_thresholds = model_store.get(champion_tag).info.metadata.get("thresholds")
        except Exception as exc:  # noqa: BLE001 - a champion that cannot load cannot defend
            problem = f"cannot be loaded: {type(exc).__name__}: {exc}"
    # a refit saw the test period: its held-out twin (same selection, trained without those
    # days) defends it, so the comparison stays out of sample
    heldout = (metadata.get("refit") or {}).get("heldout_tag")
    if heldout:
        metadata = {**metadata, "thresholds": model_store.get(heldout).info.metadata["thresholds"]}
    return promotion.run_gate(
        period,
        model_store.load_catboost(heldout or challenger_tag),
        champion_model,
        challenger_tag=challenger_tag,
        champion_tag=champion_tag,
        champion_problem=problem,
        metric=config.metric,
        margin=config.margin,
        review_budget_per_day=config.review_budget_per_day,
        challenger_thresholds=metadata.get("thresholds"),
        champion_thresholds=champion_thresholds,
    )


def _metric(values: dict, name: str) -> float:
    value = values.get(name)
    return float(value) if value is not None else float("nan")


@dg.asset(
    key=CHAMPION_KEY,
    group_name=GROUP,
    deps=[MODEL_KEY],
    kinds={"bentoml"},
    check_specs=[
        dg.AssetCheckSpec(
            GATE_CHECK,
            asset=CHAMPION_KEY,
            description=(
                "Champion vs challenger on the same recent test period: the challenger is "
                "promoted only if its metric beats the champion's by the configured margin. "
                "A refused promotion is a WARN, not an error: the champion stays in service."
            ),
        )
    ],
)
def fraud_catboost_champion(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    delta: dg.ResourceParam[DeltaStore],
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """The champion pointer the scoring service loads (it hot-reloads it, no restart).

    Runs only after the candidate passed the blocking minimum-quality check on
    ``models/fraud_catboost``; then the ``challenger_beats_champion`` gate decides whether the
    candidate replaces the champion. Every decision, and the promotion it makes, is a row of the
    registry record (``registry/model_events``), written once per run."""
    challenger = _latest_candidate(context)
    decision = decide_promotion(challenger, config, delta, model_store)
    previous = model_store.champion(MODEL_NAME)
    decided = decision.to_dict()
    run_id = context.run.run_id
    champion = model_store.record_gate(decided, promote=decision.promote, run_id=run_id) or ""
    context.log.info(
        f"promotion gate: {decision.decision} ({decision.reason}); champion {previous} -> {champion}"
    )
    gate_metadata = {
        "decision": decision.decision,
        "reason": decision.reason,
        "challenger_tag": decision.challenger_tag or "",
        "champion_tag": decision.champion_tag or "",
        "metric": decision.metric,
        "margin": decision.margin,
        f"challenger_{decision.metric}": _metric(decision.challenger, decision.metric),
        f"champion_{decision.metric}": _metric(decision.champion, decision.metric),
        "period_start": decision.period_start or "",
        "period_end": decision.period_end or "",
        "rows": decision.rows,
        "positives": decision.positives,
        "challenger_metrics": dg.MetadataValue.json(decided["challenger"]),
        "champion_metrics": dg.MetadataValue.json(decided["champion"]),
        "challenger_policy": dg.MetadataValue.json(decided["challenger_policy"]),
        "champion_policy": dg.MetadataValue.json(decided["champion_policy"]),
    }
    gate = dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=decision.decision != promotion.KEPT,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=gate_metadata,
    )
    info = model_store.get(champion).info if champion else None
    metrics = info.metadata.get("metrics", {}) if info else {}
    return dg.MaterializeResult(
        check_results=[gate],
        metadata={
            "champion": champion,
            "previous_champion": previous or "",
            "decision": decision.decision,
            "reason": decision.reason,
            "challenger": decision.challenger_tag or "",
            "test_auc_roc": metrics.get("auc_roc", 0.0),
            "test_average_precision": metrics.get("average_precision", 0.0),
            "model_store": model_store.home,
        },
    )


# ---------------------------------------------------------------------------------------------
# backtest / shadow scoring


class BacktestConfig(dg.Config):
    start: str = ""
    """ISO date/time, inclusive. Default: ``days`` before the newest row of the source."""
    end: str = ""
    """ISO date/time, exclusive. Default: just after the newest row of the source."""
    days: float = 7.0
    models: list[str] = []
    """Model tags. Default: the champion and the newest registered model."""
    source: str = "training_set"
    """``training_set`` (matured, labelled rows) or ``silver`` (every transaction in silver,
    joined point-in-time to the feature tables; labels where known)."""
    review_budget_per_day: int = REVIEW_BUDGET_PER_DAY


def backtest_rows(
    source: str,
    start: datetime | None,
    end: datetime | None,
    days: float,
    delta: DeltaStore,
    warehouse: WarehouseResource | None,
    file_labels: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, datetime, datetime]:
    """(point-in-time rows, start, end) of the source for the range (defaults filled in);
    ``file_labels`` (``window.read_label_file``) override the rows' labels where they have one."""
    if source == "training_set":
        frame = delta.read(TRAINING_SET_TABLE)
    elif source == "silver":
        if warehouse is None:
            raise ValueError("source 'silver' needs the warehouse")
        frame = warehouse.table("fct_transactions")
    else:
        raise ValueError(f"source must be 'training_set' or 'silver', got {source!r}")
    newest = backtesting.as_utc(frame["event_time"].max())
    end = end or newest + timedelta(microseconds=1)
    start = start or end - timedelta(days=days)
    if source == "silver":
        group_rows = {
            g.versioned_name: delta.read(names.feature_table(g.versioned_name))
            for g in SERVICE.groups
        }
        frame = backtesting.pit_rows(
            frame, group_rows, SERVICE, start, end, labels=warehouse.table("fct_labels")
        )
    if source == "training_set":
        in_range = frame.filter((pl.col("event_time") >= start) & (pl.col("event_time") < end))
        require_unweighted(
            in_range,
            "backtest range",
            "the training set keeps only its newest days whole: "
            "backtest older days with source 'silver'",
        )
    if file_labels is not None:
        frame = apply_file_labels(frame, file_labels)
    return frame, start, end


def run_backtest(
    tags: list[str],
    source: str,
    start: datetime | None,
    end: datetime | None,
    days: float,
    review_budget_per_day: int,
    delta: DeltaStore,
    warehouse: WarehouseResource,
    model_store: ModelStoreResource,
    file_labels: pl.DataFrame | None = None,
) -> tuple[backtesting.BacktestResult | None, dict[str, list[str]]]:
    """Score the source's rows of the range with the models of ``tags`` (the asset and the CLI
    both run this). Returns the result (None when no model can score these rows) and the
    models skipped because the rows lack some of their features."""
    frame, start, end = backtest_rows(source, start, end, days, delta, warehouse, file_labels)
    models, thresholds = backtesting.load_models(model_store, tags)
    skipped = {
        tag: missing
        for tag, model in models.items()
        if (missing := [f for f in promotion.model_features(model) if f not in frame.columns])
    }
    models = {tag: model for tag, model in models.items() if tag not in skipped}
    if not models:
        return None, skipped
    result = backtesting.backtest(
        models,
        frame,
        start,
        end,
        review_budget_per_day=review_budget_per_day,
        thresholds=thresholds,
    )
    return result, skipped


def store_scores(
    delta: DeltaStore, scores: pl.DataFrame, tags: list[str], start: datetime, end: datetime
) -> int:
    """Replace the rows of these models in [start, end) in ``serving/backtest_scores`` (so a
    re-run does not duplicate them); returns the table version."""
    quoted = ", ".join("'" + t.replace("'", "''") + "'" for t in tags)
    predicate = (
        f"model_tag IN ({quoted}) AND event_time >= '{start.isoformat()}'"
        f" AND event_time < '{end.isoformat()}'"
    )
    data = scores.with_columns(pl.col("event_time").dt.convert_time_zone("UTC"))
    return delta.replace_where(BACKTEST_SCORES_TABLE, data, predicate)


@dg.asset(
    key=["serving", "fraud_backtest"],
    group_name=GROUP,
    deps=[TRAINING_SET_KEY, fraud_catboost_champion],
    kinds={"catboost", "delta"},
)
def fraud_backtest(
    context: dg.AssetExecutionContext,
    config: BacktestConfig,
    delta: dg.ResourceParam[DeltaStore],
    model_store: ModelStoreResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Shadow scoring: champion and challenger (or any registered models) batch-score the same
    point-in-time rows of a time range; per-model and per-day metrics, scored rows in the Delta
    table ``serving/backtest_scores`` (model_tag, transaction_id, event_time, score, is_fraud)."""
    tags = list(config.models) or backtesting.default_tags(model_store, MODEL_NAME)
    if not tags:
        return dg.MaterializeResult(metadata={"note": "no registered model to backtest"})
    result, skipped = run_backtest(
        tags,
        config.source,
        backtesting.as_utc(config.start) if config.start else None,
        backtesting.as_utc(config.end) if config.end else None,
        config.days,
        config.review_budget_per_day,
        delta,
        warehouse,
        model_store,
    )
    if skipped:
        context.log.warning(f"models without all their features in the rows, skipped: {skipped}")
    if result is None:
        return dg.MaterializeResult(
            metadata={
                "note": "no model can score these rows",
                "skipped": dg.MetadataValue.json(skipped),
            }
        )
    start, end, models = result.start, result.end, list(result.models)
    version = store_scores(delta, result.scores, models, start, end) if result.rows else None
    context.log.info(f"backtest {start} .. {end}:\n{result.markdown()}")
    summary = result.to_dict()
    return dg.MaterializeResult(
        metadata={
            "start": start.isoformat(),
            "end": end.isoformat(),
            "source": config.source,
            "models": dg.MetadataValue.json(models),
            "dagster/row_count": result.rows,
            "table": dg.MetadataValue.md(result.markdown()),
            "metrics": dg.MetadataValue.json(
                {
                    name: {k: v for k, v in m.items() if k != "per_day"}
                    for name, m in summary["models"].items()
                }
            ),
            "per_day": dg.MetadataValue.json(
                {name: m["per_day"] for name, m in summary["models"].items()}
            ),
            "rules_unmeasured": dg.MetadataValue.json(summary["rules_unmeasured"]),
            "skipped_models": dg.MetadataValue.json(skipped),
            "scores_table": BACKTEST_SCORES_TABLE,
            "scores_delta_version": version if version is not None else -1,
        }
    )


# ---------------------------------------------------------------------------------------------
# retraining


retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.groups("training", "serving", "monitoring"),
    description=(
        "Rebuild the training set, train a candidate, gate it (minimum quality, then champion "
        "vs challenger) and promote it only if it wins. On a schedule, on demand (launch it), "
        "and from retrain_on_drift_sensor."
    ),
)

# The scheduled retrain runs the hyper-parameter search within its time budget (the defaults
# of both are declared in lib/training/pipeline.py); on-demand and drift retrains do not.
_SCHEDULED = PipelineConfig()
retrain_schedule = dg.ScheduleDefinition(
    name="retrain_schedule",
    job=retrain_job,
    cron_schedule="0 3 * * *",
    run_config={
        "ops": {
            "__".join(MODEL_KEY.path): {
                "config": {
                    "search_trials": _SCHEDULED.scheduled_search_trials,
                    "search_time_budget_s": _SCHEDULED.scheduled_search_time_budget_s,
                }
            }
        }
    },
)
