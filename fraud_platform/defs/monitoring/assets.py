"""Monitoring: whylogs profiles of the training set and of served traffic, drift checks,
and failure alerts."""

import dagster as dg
import polars as pl

from fraud_platform.defs.training.assets import TRAINING_SET_TABLE, fraud_training_set
from fraud_platform.lib import monitoring, plots
from fraud_platform.lib.features.request import FRAUD_SCORING_V1
from fraud_platform.resources import AlertResource, DeltaResource, FilesResource, ScoreLogResource

GROUP = "monitoring"
FEATURES = list(FRAUD_SCORING_V1.model_features)


def served_features(log: pl.DataFrame) -> pl.DataFrame:
    """The model features the service actually used, one row per scored request."""
    columns = [f"f_{name}" for name in FEATURES if f"f_{name}" in log.columns]
    return (
        log.select(columns).rename({c: c.removeprefix("f_") for c in columns})
        if columns
        else pl.DataFrame()
    )


@dg.asset(
    key=["monitoring", "training_profile"],
    group_name=GROUP,
    deps=[fraud_training_set],
    kinds={"whylogs"},
)
def training_profile(delta: DeltaResource, files: FilesResource) -> dg.MaterializeResult:
    """whylogs profile of the training set's features: the reference for drift."""
    frame = delta.read(TRAINING_SET_TABLE)
    summary = monitoring.profile_frame(frame, FEATURES)
    path = files.path("profiles", "training_profile.bin")
    monitoring.write_profile(summary, path)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "profile_path": str(path),
            "columns": len(FEATURES),
        }
    )


@dg.asset(key=["monitoring", "served_traffic_profile"], group_name=GROUP, kinds={"whylogs"})
def served_traffic_profile(
    score_log: ScoreLogResource, files: FilesResource
) -> dg.MaterializeResult:
    """whylogs profile of the features the scoring service served (from its score log)."""
    served = served_features(score_log.read())
    path = files.path("profiles", "served_traffic_profile.bin")
    if served.height:
        monitoring.write_profile(monitoring.profile_frame(served, served.columns), path)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": served.height,
            "profile_path": str(path) if served.height else "",
        }
    )


class DriftConfig(dg.Config):
    max_share_drifted: float = 0.3
    """Fail when more than this share of features drifted."""
    min_served_rows: int = 200
    min_psi: float = 0.1
    """Ignore shifts below this population stability index: with thousands of rows the KS and
    null-rate tests flag even negligible shifts (0.1 is the usual "moderate shift" line)."""


@dg.asset_check(
    asset=served_traffic_profile,
    additional_deps=[training_profile],
    description="Served features are distributed like the training set's (KS / chi-square per feature).",
)
def served_features_have_not_drifted(
    config: DriftConfig, delta: DeltaResource, score_log: ScoreLogResource
) -> dg.AssetCheckResult:
    served = served_features(score_log.read())
    if served.height < config.min_served_rows:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "served_rows": served.height,
                "note": "too little served traffic to judge drift",
            },
        )
    reference = delta.read(TRAINING_SET_TABLE).select(served.columns)
    report = monitoring.drift_report(reference, served, served.columns, min_psi=config.min_psi)
    return dg.AssetCheckResult(
        passed=report.share_drifted <= config.max_share_drifted,
        metadata={
            "share_drifted": report.share_drifted,
            "drifted_columns": dg.MetadataValue.json(report.drifted_columns),
            "served_rows": served.height,
            "report": dg.MetadataValue.json(report.to_dict()),
            "drift_plot": dg.MetadataValue.md(
                plots.png_markdown(plots.drift_png(report), "Feature drift")
            ),
        },
    )


@dg.run_failure_sensor(
    name="run_failure_alert_sensor", default_status=dg.DefaultSensorStatus.RUNNING
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertResource) -> None:
    """Every failed run is announced (alerts log, and the webhook when configured)."""
    alerts.send(
        f"fraud-platform run failed: {context.dagster_run.job_name}",
        {"run_id": context.dagster_run.run_id, "error": context.failure_event.message},
    )
