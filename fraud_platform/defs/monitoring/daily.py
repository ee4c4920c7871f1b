"""Drift over time: daily partitions (the UTC date a decision was made) of served traffic.

Per decision day, each asset reads only that day's partition of ``bronze/scores``:

* ``monitoring/daily_served_profile``: the whylogs profile of the features served and the score;
* ``monitoring/daily_feature_drift``: that profile against the profiles of the served days
  before it (per-feature limits calibrated on their day-to-day variation,
  ``lib/monitoring/recent_drift.py``), or against the training reference
  (``monitoring/training_profile``) while there are fewer than ``min_history_days``; one row per
  day in the Delta table of the same name;
* ``monitoring/daily_prediction_drift`` (``prediction.py``): the day's scores and decision rates
  against the served model's validation period, one row per day.

Each drift asset carries its checks (a ``Verdict``: status, metadata and plot agree) and a
"drift over time" plot of every day computed so far.
"""

from datetime import date, timedelta

import dagster as dg
import polars as pl

from fraud_platform import names
from fraud_platform.defs.monitoring.assets import (
    FEATURES,
    TRAINING_PROFILE_FILE,
    DriftConfig,
    served_features,
)
from fraud_platform.defs.monitoring.verdicts import check_result
from fraud_platform.lib import plots
from fraud_platform.lib.monitoring import charts, recent_drift
from fraud_platform.lib.monitoring.daily_tables import DATE_COLUMN, read_days, write_day
from fraud_platform.lib.monitoring.decisions import read_decisions, without_outages
from fraud_platform.lib.monitoring.drift import DriftReport, drift_report
from fraud_platform.lib.monitoring.profiles import profile_frame, read_profile, write_profile
from fraud_platform.lib.monitoring.verdict import Verdict, judge, not_judged
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import FilesResource

GROUP = "monitoring_daily"
DECISION_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
SCORES_KEY = dg.AssetKey(names.SCORES_TABLE.split("/"))
PROFILE_KEY = dg.AssetKey(["monitoring", "daily_served_profile"])
TRAINING_PROFILE_KEY = dg.AssetKey(["monitoring", "training_profile"])
FEATURE_DRIFT_KEY = dg.AssetKey(names.DAILY_FEATURE_DRIFT_TABLE.split("/"))
PREDICTION_DRIFT_KEY = dg.AssetKey(names.DAILY_PREDICTION_DRIFT_TABLE.split("/"))
FEATURE_DRIFT_CHECK = "daily_features_have_not_drifted"
SCORE_COLUMN = "score"


def partition_day(context: dg.AssetExecutionContext) -> date:
    return date.fromisoformat(context.partition_key)


def daily_profile_file(day: date) -> tuple[str, str, str]:
    return ("profiles", "daily", f"served_{day.isoformat()}.bin")


def model_versions(decisions: pl.DataFrame) -> dict[str, int]:
    """Decisions per served model version, most first."""
    if decisions.is_empty():
        return {}
    counts = (
        decisions.group_by("model_version")
        .len()
        .sort(["len", "model_version"], descending=[True, False])
    )
    return dict(zip(counts["model_version"].to_list(), counts["len"].to_list(), strict=True))


@dg.asset(
    key=PROFILE_KEY,
    group_name=GROUP,
    partitions_def=DECISION_PARTITIONS,
    deps=[SCORES_KEY],
    kinds={"whylogs"},
)
def daily_served_profile(
    context: dg.AssetExecutionContext, delta: dg.ResourceParam[DeltaStore], files: FilesResource
) -> dg.MaterializeResult:
    """whylogs profile of one decision day: the features the service served and the score,
    from that day's partition of bronze/scores only, leaving out decisions made during an
    online-store outage (counted); no file on a day without decisions."""
    day = partition_day(context)
    decisions = read_decisions(delta, day, day)
    path = files.path(*daily_profile_file(day))
    profiled, outages = without_outages(decisions)
    frame = served_features(profiled)
    if profiled.height:
        frame = frame.with_columns(profiled[SCORE_COLUMN])
        write_profile(profile_frame(frame, frame.columns), path)
    else:
        path.unlink(missing_ok=True)
    days_read = (
        sorted({d.isoformat() for d in decisions["scored_at"].dt.date().to_list()})
        if decisions.height
        else []
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": decisions.height,
            "decision_date": day.isoformat(),
            "decision_dates_read": dg.MetadataValue.json(days_read),
            "model_versions": dg.MetadataValue.json(model_versions(decisions)),
            "degraded": int(decisions["degraded"].sum()) if decisions.height else 0,
            "outage_decisions_excluded": outages,
            "profiled_rows": profiled.height,
            "profile_path": str(path) if profiled.height else "",
        }
    )


def _over_time(frame: pl.DataFrame, column: str) -> list[float | None]:
    return [None if v is None else float(v) for v in frame[column].to_list()]


class DailyDriftConfig(dg.Config):
    history_days: int = 7
    """Compare a day with the served traffic of up to this many days before it."""
    min_history_days: int = 7
    """With fewer history days (each with min_served_rows) the day is compared with the
    training reference instead (``reference_*`` thresholds). A full week: traffic has a weekly
    cycle, and limits calibrated on 3 days failed a normal Monday (full benchmark: the 24-hour
    counts after a quiet Sunday, 6 of 58 features, share 0.103 > 0.1)."""
    psi_factor: float = recent_drift.FACTOR
    """A feature's PSI limit: this times the largest PSI of a history day against the others."""
    floor_psi: float = recent_drift.FLOOR_PSI
    """No feature's PSI limit is below this."""
    max_share_drifted: float = 0.1
    """Fail (ERROR) when more than this share of features moved beyond their limits."""
    warn_share_drifted: float = 0.05
    min_served_rows: int = 200
    """Below this many decisions a day is not judged (and not used as history)."""
    reference_max_share_drifted: float = DriftConfig().max_share_drifted
    """Against the training reference (too little history): fail above this share..."""
    reference_warn_share_drifted: float = DriftConfig().warn_share_drifted
    """...warn above this one (ageing features drift against a reference a week or two old)."""
    min_psi: float = DriftConfig().min_psi
    """Against the training reference: shifts below this PSI do not count."""


def served_history(files: FilesResource, day: date, config: DailyDriftConfig) -> list:
    """The daily profiles of the ``history_days`` before ``day`` with enough decisions."""
    history = []
    for back in range(config.history_days, 0, -1):
        path = files.path(*daily_profile_file(day - timedelta(days=back)))
        if path.exists():
            profile = read_profile(path)
            if profile.rows >= config.min_served_rows:
                history.append(profile)
    return history


def day_feature_drift(
    served, history: list, files: FilesResource, config: DailyDriftConfig
) -> tuple[Verdict, DriftReport, dict]:
    """(verdict, per-column report, report JSON) of one day: against the served history with
    calibrated limits when there is enough of it, else against the training reference."""
    columns = [c for c in FEATURES if c in served.columns]
    if len(history) >= config.min_history_days:
        calibrated = recent_drift.calibrated_drift(
            history,
            served,
            [c for c in columns if all(c in h.columns for h in history)],
            factor=config.psi_factor,
            floor_psi=config.floor_psi,
        )
        verdict = judge(
            "share_drifted",
            calibrated.share_drifted,
            config.max_share_drifted,
            config.warn_share_drifted,
        )
        return verdict, calibrated.report, calibrated.to_dict()
    reference_path = files.path(*TRAINING_PROFILE_FILE)
    if not reference_path.exists():
        raise dg.Failure(
            f"no training profile at {reference_path}: materialize monitoring/training_profile"
        )
    reference = read_profile(reference_path)
    columns = [c for c in columns if c in reference.columns]
    report = drift_report(reference, served, columns, min_psi=config.min_psi)
    verdict = judge(
        "share_drifted",
        report.share_drifted,
        config.reference_max_share_drifted,
        config.reference_warn_share_drifted,
    )
    return verdict, report, {**report.to_dict(), "reference": "training profile"}


@dg.asset(
    key=FEATURE_DRIFT_KEY,
    group_name=GROUP,
    partitions_def=DECISION_PARTITIONS,
    deps=[PROFILE_KEY, TRAINING_PROFILE_KEY],
    kinds={"whylogs", "delta"},
    check_specs=[
        dg.AssetCheckSpec(
            FEATURE_DRIFT_CHECK,
            asset=FEATURE_DRIFT_KEY,
            description=(
                "The day's served features are distributed like those of the days before: "
                "share of features whose PSI exceeds their own limit (calibrated on the history "
                "days' day-to-day PSI) with a KS / chi-square p < 0.05; WARN above "
                "warn_share_drifted, FAIL above max_share_drifted. With fewer than "
                "min_history_days of history: against the training reference (min PSI, "
                "reference_* thresholds). Metadata value/threshold."
            ),
        )
    ],
)
def daily_feature_drift(
    context: dg.AssetExecutionContext,
    config: DailyDriftConfig,
    delta: dg.ResourceParam[DeltaStore],
    files: FilesResource,
) -> dg.MaterializeResult:
    """Feature drift of one decision day against the served traffic of the days before it
    (``lib/monitoring/recent_drift.py``: the training reference ages, and its ageing features
    hid a real switch), or against the training reference while there is too little history;
    one row per day in the Delta table monitoring/daily_feature_drift, and the drift-over-time
    plot of all days. Reads the daily profiles of earlier days: materialize days in order."""
    day = partition_day(context)
    served_path = files.path(*daily_profile_file(day))
    served = read_profile(served_path) if served_path.exists() else None
    report, report_json, history = None, {}, []
    if served is None or served.rows < config.min_served_rows:
        rows = served.rows if served else 0
        verdict = not_judged(
            "share_drifted",
            f"{rows} decisions on {day}, fewer than min_served_rows={config.min_served_rows}",
            config.max_share_drifted,
            config.warn_share_drifted,
        )
    else:
        history = served_history(files, day, config)
        verdict, report, report_json = day_feature_drift(served, history, files, config)
    reference = report_json.get("reference", "")
    psis = [c.psi for c in report.columns.values() if c.psi is not None] if report else []
    row = pl.DataFrame(
        {
            DATE_COLUMN: [day],
            "rows": [served.rows if served else 0],
            "columns_compared": [len(report.columns) if report else 0],
            "share_drifted": [report.share_drifted if report else None],
            "drifted_columns": [",".join(report.drifted_columns) if report else ""],
            "max_psi": [max(psis) if psis else None],
            "status": [verdict.status],
            "threshold": [verdict.threshold],
            "warn_threshold": [verdict.warn_threshold],
        },
        schema_overrides={"share_drifted": pl.Float64, "max_psi": pl.Float64},
    )
    version = write_day(delta, names.DAILY_FEATURE_DRIFT_TABLE, day, row)
    table = read_days(delta, names.DAILY_FEATURE_DRIFT_TABLE)
    days = [d.isoformat() for d in table[DATE_COLUMN].to_list()]
    over_time = charts.over_time_png(
        days,
        {
            "share of features drifted": _over_time(table, "share_drifted"),
            "max PSI": _over_time(table, "max_psi"),
        },
        thresholds={"fail": verdict.threshold, "warn": verdict.warn_threshold or verdict.threshold},
        statuses=table["status"].to_list(),
        title=f"Feature drift over time ({len(days)} days); {day}: {verdict.summary}",
        ylabel="share drifted / max PSI",
    )
    figures = {
        "share_drifted": verdict.value,
        "drifted_columns": dg.MetadataValue.json(report.drifted_columns if report else []),
        "columns_compared": len(report.columns) if report else 0,
        "served_rows": served.rows if served else 0,
        "reference": reference,
        "history_days": len(history),
        "decision_date": day.isoformat(),
    }
    day_plot = (
        charts.feature_drift_png(report_json, f"{day} vs {reference}: {verdict.summary}")
        if report
        else None
    )
    check = check_result(
        verdict,
        check_name=FEATURE_DRIFT_CHECK,
        asset_key=FEATURE_DRIFT_KEY,
        metadata={**figures, "report": dg.MetadataValue.json(report_json)},
        plot=day_plot,
    )
    metadata = {
        **verdict.metadata(),
        **figures,
        "dagster/row_count": served.rows if served else 0,
        "table_version": version,
        "drift_over_time": dg.MetadataValue.md(
            plots.png_markdown(over_time, "Feature drift over time")
        ),
    }
    if day_plot is not None:
        metadata["drift_plot"] = dg.MetadataValue.md(plots.png_markdown(day_plot, verdict.summary))
    return dg.MaterializeResult(metadata=metadata, check_results=[check])
