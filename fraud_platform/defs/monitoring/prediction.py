"""Prediction drift over time: per decision day (a partition of ``bronze/scores``), the scores
and decision rates of the day's main served model against that model's validation period, one
row per day in ``monitoring/daily_prediction_drift`` (see ``daily.py`` for the profile and the
feature drift of the same days)."""

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.defs.monitoring.daily import (
    DECISION_PARTITIONS,
    GROUP,
    PREDICTION_DRIFT_KEY,
    SCORES_KEY,
    _over_time,
    model_versions,
    partition_day,
)
from fraud_platform.defs.monitoring.verdicts import check_result
from fraud_platform.lib import plots
from fraud_platform.lib.monitoring import charts
from fraud_platform.lib.monitoring.daily_tables import DATE_COLUMN, read_days, write_day
from fraud_platform.lib.monitoring.decisions import read_decisions
from fraud_platform.lib.monitoring.prediction_drift import (
    decision_counts,
    decision_rate_drift,
    score_drift,
)
from fraud_platform.lib.monitoring.reference import validation_reference
from fraud_platform.lib.monitoring.verdict import NOT_JUDGED, judge, not_judged
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import FilesResource, ModelStoreResource

SCORE_DRIFT_CHECK = "daily_scores_have_not_drifted"
DECISION_RATE_CHECK = "daily_decision_rates_are_stable"


class PredictionDriftConfig(dg.Config):
    max_score_psi: float = 0.25
    """Fail when the day's score PSI against the validation period exceeds this (a large shift)."""
    warn_score_psi: float = 0.1
    """Warn above this (a moderate shift)."""
    max_decision_share_change: float = 0.05
    """Fail when a decision's share (approve / review / decline) moved more than this (absolute)."""
    warn_decision_share_change: float = 0.02
    min_decisions: int = 200
    """Below this many decisions of the served model the day is not judged."""


def reference_scores(
    tag: str, delta: DeltaStore, model_store: ModelStoreResource, files: FilesResource
) -> pl.DataFrame:
    """The model's validation-period scores and decisions (``reference.validation_reference``),
    computed once per model tag and kept as a parquet file."""
    path = files.path("profiles", "validation_reference", f"{tag.replace(':', '_')}.parquet")
    if path.exists():
        return pl.read_parquet(path)
    metadata = dict(model_store.get(tag).info.metadata)
    table = str(metadata.get("training_set_table") or names.TRAINING_SET_TABLE)
    version = metadata.get("training_set_delta_version")
    frame = delta.read(table, version=int(version) if version is not None else None)
    reference = validation_reference(model_store.load_catboost(tag), metadata, frame)
    tmp = path.with_name(f".{path.name}.tmp")
    reference.write_parquet(tmp)
    tmp.replace(path)
    return reference


@dg.asset(
    key=PREDICTION_DRIFT_KEY,
    group_name=GROUP,
    partitions_def=DECISION_PARTITIONS,
    deps=[SCORES_KEY, dg.AssetKey(names.CHAMPION_ASSET.split("/"))],
    kinds={"delta"},
    check_specs=[
        dg.AssetCheckSpec(
            SCORE_DRIFT_CHECK,
            asset=PREDICTION_DRIFT_KEY,
            description=(
                "The day's score distribution matches the served model's validation period: PSI "
                "on validation-quantile bins (KS reported); WARN above warn_score_psi, FAIL "
                "above max_score_psi."
            ),
        ),
        dg.AssetCheckSpec(
            DECISION_RATE_CHECK,
            asset=PREDICTION_DRIFT_KEY,
            description=(
                "The day's approve / review / decline shares match the validation period's: the "
                "largest absolute change of a share; WARN above warn_decision_share_change, FAIL "
                "above max_decision_share_change."
            ),
        ),
    ],
)
def daily_prediction_drift(
    context: dg.AssetExecutionContext,
    config: PredictionDriftConfig,
    delta: dg.ResourceParam[DeltaStore],
    model_store: ModelStoreResource,
    files: FilesResource,
) -> dg.MaterializeResult:
    """Prediction drift of one decision day: the scores and decision rates of the day's main
    served model against that model's validation period (its own scores and the policy's
    decisions there); one row per day in monitoring/daily_prediction_drift and the
    drift-over-time plot of all days."""
    day = partition_day(context)
    decisions = read_decisions(delta, day, day)
    versions = model_versions(decisions)
    tag = next(iter(versions), None)
    served = decisions.filter(pl.col("model_version") == tag) if tag else decisions
    score, rates = None, None
    if served.height < config.min_decisions:
        why = f"{served.height} decisions of the served model on {day}, fewer than min_decisions={config.min_decisions}"
        score_verdict = not_judged("score_psi", why, config.max_score_psi, config.warn_score_psi)
        rate_verdict = not_judged(
            "max_decision_share_change",
            why,
            config.max_decision_share_change,
            config.warn_decision_share_change,
        )
    else:
        reference = reference_scores(str(tag), delta, model_store, files)
        score = score_drift(reference["score"].to_numpy(), served["score"].to_numpy())
        rates = decision_rate_drift(
            decision_counts(reference["decision"].to_list()),
            decision_counts(served["decision"].to_list()),
        )
        score_verdict = judge("score_psi", score.psi, config.max_score_psi, config.warn_score_psi)
        rate_verdict = judge(
            "max_decision_share_change",
            rates.max_abs_share_change,
            config.max_decision_share_change,
            config.warn_decision_share_change,
        )
    current = rates.current_shares if rates else {}
    row = pl.DataFrame(
        {
            DATE_COLUMN: [day],
            "model_tag": [tag or ""],
            "rows": [served.height],
            "score_psi": [score.psi if score else None],
            "score_ks": [score.ks_statistic if score else None],
            "score_ks_pvalue": [score.ks_pvalue if score else None],
            "approve_share": [current.get("approve")],
            "review_share": [current.get("review")],
            "decline_share": [current.get("decline")],
            "max_decision_share_change": [rates.max_abs_share_change if rates else None],
            "score_status": [score_verdict.status],
            "decision_rate_status": [rate_verdict.status],
        },
        schema_overrides={
            c: pl.Float64
            for c in (
                "score_psi",
                "score_ks",
                "score_ks_pvalue",
                "approve_share",
                "review_share",
                "decline_share",
                "max_decision_share_change",
            )
        },
    )
    version = write_day(delta, names.DAILY_PREDICTION_DRIFT_TABLE, day, row)
    history = read_days(delta, names.DAILY_PREDICTION_DRIFT_TABLE)
    days = [d.isoformat() for d in history[DATE_COLUMN].to_list()]
    over_time = charts.over_time_png(
        days,
        {
            "score PSI": _over_time(history, "score_psi"),
            "score KS": _over_time(history, "score_ks"),
            "max decision share change": _over_time(history, "max_decision_share_change"),
        },
        thresholds={"fail": config.max_score_psi, "warn": config.warn_score_psi},
        statuses=history["score_status"].to_list(),
        title=f"Prediction drift over time ({len(days)} days); {day}: {score_verdict.summary}",
        ylabel="PSI / KS / share change",
    )
    day_plot = None
    if score and rates:
        day_plot = charts.prediction_drift_png(
            score.to_dict(),
            rates.to_dict(),
            f"{day} {tag}: {score_verdict.summary}; {rate_verdict.summary}",
        )
    score_meta = {
        "score_drift": dg.MetadataValue.json(score.to_dict() if score else {}),
        "model_tag": tag or "",
    }
    rate_meta = {
        "decision_rates": dg.MetadataValue.json(rates.to_dict() if rates else {}),
        "model_tag": tag or "",
    }
    checks = [
        check_result(
            score_verdict,
            check_name=SCORE_DRIFT_CHECK,
            asset_key=PREDICTION_DRIFT_KEY,
            metadata=score_meta,
            plot=day_plot,
        ),
        check_result(
            rate_verdict,
            check_name=DECISION_RATE_CHECK,
            asset_key=PREDICTION_DRIFT_KEY,
            metadata=rate_meta,
            plot=day_plot,
        ),
    ]
    metadata = {
        "dagster/row_count": served.height,
        "decisions_read": decisions.height,
        "model_versions": dg.MetadataValue.json(versions),
        "score_psi": score_verdict.value,
        "score_verdict": score_verdict.summary,
        "max_decision_share_change": rate_verdict.value,
        "decision_rate_verdict": rate_verdict.summary,
        **score_meta,
        **rate_meta,
        "table_version": version,
        "drift_over_time": dg.MetadataValue.md(
            plots.png_markdown(over_time, "Prediction drift over time")
        ),
    }
    if day_plot is not None:
        metadata["drift_plot"] = dg.MetadataValue.md(
            plots.png_markdown(day_plot, "Prediction drift")
        )
    if score_verdict.status == NOT_JUDGED:
        metadata["note"] = score_verdict.reason
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
