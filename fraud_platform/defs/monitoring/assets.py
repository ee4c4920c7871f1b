"""Monitoring: whylogs profiles of the training set and of served traffic, the drift check
between the two profiles, the training-serving skew check, and failure alerts."""

from datetime import timedelta

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.defs.monitoring.verdicts import check_result
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.training_frame import model_frame
from fraud_platform.lib.monitoring import charts
from fraud_platform.lib.monitoring.decisions import read_decisions, recent_dates, without_outages
from fraud_platform.lib.monitoring.drift import DriftReport, drift_report
from fraud_platform.lib.monitoring.profiles import profile_frame, read_profile, write_profile
from fraud_platform.lib.monitoring.skew import skew_report
from fraud_platform.lib.monitoring.verdict import Verdict, judge, not_judged
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import TRAINING_SET_TABLE
from fraud_platform.resources import AlertResource, FilesResource

GROUP = "monitoring"
FEATURES = list(FRAUD_SCORING_V1.model_features)
TRAINING_PROFILE_FILE = ("profiles", "training_profile.bin")
SERVED_PROFILE_FILE = ("profiles", "served_traffic_profile.bin")


def served_features(log: pl.DataFrame) -> pl.DataFrame:
    """The model features the service actually used, one row per decision."""
    columns = [f"f_{name}" for name in FEATURES if f"f_{name}" in log.columns]
    return (
        log.select(columns).rename({c: c.removeprefix("f_") for c in columns})
        if columns
        else pl.DataFrame()
    )


REFERENCE_DAYS = 7.0


def recent_training_rows(frame: pl.DataFrame, days: float) -> pl.DataFrame:
    """The training set's last ``days``: the drift reference. The early days carry the warm-up
    of history features (30-day counts, lifetime counts grow from zero when the history
    starts), which live traffic never shows."""
    last = frame["event_time"].max()
    return frame.filter(pl.col("event_time") > last - timedelta(days=days))


class ReferenceConfig(dg.Config):
    reference_days: float = REFERENCE_DAYS
    """Profile the training set's most recent days only (see ``recent_training_rows``)."""


@dg.asset(
    key=["monitoring", "training_profile"],
    group_name=GROUP,
    deps=[dg.AssetKey(TRAINING_SET_TABLE.split("/"))],
    kinds={"whylogs"},
)
def training_profile(
    config: ReferenceConfig, delta: dg.ResourceParam[DeltaStore], files: FilesResource
) -> dg.MaterializeResult:
    """whylogs profile of the training set's recent features: the reference for drift."""
    frame = recent_training_rows(delta.read(TRAINING_SET_TABLE), config.reference_days)
    path = write_profile(profile_frame(frame, FEATURES), files.path(*TRAINING_PROFILE_FILE))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": frame.height,
            "profile_path": str(path),
            "columns": len(FEATURES),
            "reference_days": config.reference_days,
        }
    )


def served_decisions(delta: DeltaStore, days: int) -> pl.DataFrame:
    """The decisions of the last ``days`` UTC dates: only those partitions of bronze/scores."""
    first, last = recent_dates(days)
    return read_decisions(delta, first, last)


class ServedConfig(dg.Config):
    days: int = 1
    """Profile the decisions of the last ``days`` UTC dates (today included)."""


@dg.asset(
    key=["monitoring", "served_traffic_profile"],
    group_name=GROUP,
    deps=[dg.AssetKey(names.SCORES_TABLE.split("/"))],
    kinds={"whylogs"},
)
def served_traffic_profile(
    config: ServedConfig, delta: dg.ResourceParam[DeltaStore], files: FilesResource
) -> dg.MaterializeResult:
    """whylogs profile of the features the scoring service served (from its decision log,
    ingested into bronze/scores), leaving out decisions made during an online-store outage
    (``decisions.without_outages``); no file while nothing was served, so the drift check
    never reads an older traffic's profile."""
    decisions, outages = without_outages(served_decisions(delta, config.days))
    served = served_features(decisions)
    path = files.path(*SERVED_PROFILE_FILE)
    if served.height:
        write_profile(profile_frame(served, served.columns), path)
    else:
        path.unlink(missing_ok=True)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": served.height,
            "outage_decisions_excluded": outages,
            "profile_path": str(path) if served.height else "",
        }
    )


class DriftConfig(dg.Config):
    max_share_drifted: float = 0.3
    """Fail (ERROR) when more than this share of features drifted."""
    warn_share_drifted: float = 0.1
    """Warn when more than this share drifted (notable, under the failing threshold)."""
    min_served_rows: int = 200
    """Below this many served rows drift is not judged (the check says so)."""
    min_psi: float = 0.1
    """Ignore shifts below this population stability index: with thousands of rows the KS and
    null-rate tests flag even negligible shifts (0.1 is the usual "moderate shift" line)."""


def judge_feature_drift(report: DriftReport, config: DriftConfig) -> Verdict:
    return judge(
        "share_drifted",
        report.share_drifted,
        config.max_share_drifted,
        config.warn_share_drifted,
    )


def feature_drift_plot(report: DriftReport, verdict: Verdict, title: str) -> bytes:
    """The per-feature drift bars, titled with the verdict line (figure, thresholds, outcome)."""
    return charts.feature_drift_png(report.to_dict(), f"{title}: {verdict.summary}")


@dg.asset_check(
    asset=served_traffic_profile,
    additional_deps=[training_profile],
    description=(
        "Served features are distributed like the training reference's: KS / chi-square per "
        "feature between the served-traffic profile and the training profile; the share of "
        "drifted features warns above warn_share_drifted and fails above max_share_drifted."
    ),
)
def served_features_have_not_drifted(
    config: DriftConfig, files: FilesResource
) -> dg.AssetCheckResult:
    served_path, reference_path = (
        files.path(*SERVED_PROFILE_FILE),
        files.path(*TRAINING_PROFILE_FILE),
    )
    served = read_profile(served_path) if served_path.exists() else None
    if served is None or served.rows < config.min_served_rows:
        rows = served.rows if served else 0
        verdict = not_judged(
            "share_drifted",
            f"{rows} served rows, fewer than min_served_rows={config.min_served_rows}",
            config.max_share_drifted,
            config.warn_share_drifted,
        )
        return check_result(verdict, metadata={"served_rows": rows})
    if not reference_path.exists():
        return dg.AssetCheckResult(
            passed=False,
            description=(
                f"no training profile at {reference_path}: materialize monitoring/training_profile"
            ),
        )
    reference = read_profile(reference_path)
    columns = [c for c in FEATURES if c in served.columns and c in reference.columns]
    report = drift_report(reference, served, columns, min_psi=config.min_psi)
    verdict = judge_feature_drift(report, config)
    return check_result(
        verdict,
        metadata={
            "share_drifted": report.share_drifted,
            "drifted_columns": dg.MetadataValue.json(report.drifted_columns),
            "columns_compared": len(columns),
            "served_rows": served.rows,
            "reference_rows": reference.rows,
            "min_psi": config.min_psi,
            "report": dg.MetadataValue.json(report.to_dict()),
        },
        plot=feature_drift_plot(report, verdict, "Drift"),
    )


class SkewConfig(dg.Config):
    max_mismatch_rate: float = 0.01
    """Fail when more than this share of any feature's served values differ from offline."""
    max_requests: int = 5_000
    """Compare the most recent decisions only."""
    days: int = 1
    """Read the decisions of the last ``days`` UTC dates (today included)."""


JOIN_KEYS = tuple(sorted({k for g in FRAUD_SCORING_V1.groups for k in g.entity.join_keys}))
ENTITY_COLUMNS = ("transaction_id", "event_time", *JOIN_KEYS)
REQUEST_COLUMNS = ("amount", "channel", "merchant_category")


def offline_features_for(log: pl.DataFrame, delta: DeltaStore) -> pl.DataFrame:
    """What the offline path gives for each scored request: the point-in-time join at the
    request's event_time plus the same request-time feature code."""
    rows = log.select("request_id", *ENTITY_COLUMNS, *REQUEST_COLUMNS).with_columns(
        pl.col(JOIN_KEYS).cast(pl.String)  # a key never seen in the log reads back as Null
    )
    # only the feature partitions a lookup of these requests can reach: from the earliest
    # request's date minus the group's TTL to the latest request's date
    first, last = rows["event_time"].min(), rows["event_time"].max()
    group_rows = {
        g.versioned_name: delta.scan(names.feature_table(g.versioned_name)).filter(
            pl.col(names.FEATURE_DATE).is_between((first - g.ttl).date(), last.date())
        )
        for g in FRAUD_SCORING_V1.groups
    }
    joined = point_in_time_join(rows, FRAUD_SCORING_V1.groups, group_rows)
    return pl.concat(
        [joined.select("request_id"), model_frame(joined, FRAUD_SCORING_V1)], how="horizontal"
    )


def compare_served_with_offline(log: pl.DataFrame, delta: DeltaStore) -> dict:
    """Per-feature mismatch between served values (decision log) and the offline path."""
    served = pl.concat([log.select("request_id"), served_features(log)], how="horizontal")
    return skew_report(offline_features_for(log, delta), served, ["request_id"], FEATURES)


@dg.asset_check(
    asset=served_traffic_profile,
    additional_deps=[dg.AssetKey(["features", g.versioned_name]) for g in FRAUD_SCORING_V1.groups],
    description=(
        "Training-serving skew: the features the service used for each request equal what the "
        "offline point-in-time path gives for the same entities and time."
    ),
)
def served_features_match_offline(
    config: SkewConfig, delta: dg.ResourceParam[DeltaStore]
) -> dg.AssetCheckResult:
    log = served_decisions(delta, config.days)
    if log.height:
        log = log.filter(~pl.col("degraded")).tail(config.max_requests)
    if log.height == 0:
        verdict = not_judged(
            "worst_mismatch_rate", "no non-degraded decisions to compare", config.max_mismatch_rate
        )
        return check_result(verdict, metadata={"compared": 0})
    report = compare_served_with_offline(log, delta)
    verdict = judge(
        "worst_mismatch_rate", float(report["max_mismatch_rate"]), config.max_mismatch_rate
    )
    return check_result(
        verdict,
        metadata={
            "compared": log.height,
            "worst_mismatch_rate": verdict.value,
            "features_with_skew": dg.MetadataValue.json(report["features_with_skew"]),
            "limit": config.max_mismatch_rate,
            "report": dg.MetadataValue.json(report),
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
