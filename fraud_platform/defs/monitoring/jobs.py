"""The daily monitoring job and its schedule: every night, yesterday's decisions (profile,
feature and prediction drift, shadow scores, realized performance), and the realized
performance of the day whose labels just matured (re-computed with the labels known now)."""

from datetime import timedelta

import dagster as dg

from fraud_platform.defs.monitoring.daily import DECISION_PARTITIONS, GROUP
from fraud_platform.defs.monitoring.performance import REALIZED_KEY, RealizedConfig

daily_monitoring_job = dg.define_asset_job(
    "daily_monitoring_job",
    selection=dg.AssetSelection.groups(GROUP),
    partitions_def=DECISION_PARTITIONS,
    description=(
        "Daily monitoring of one decision day: served-traffic profile, feature drift, prediction "
        "drift, the challenger in shadow and realized performance (labels known so far)."
    ),
)


@dg.schedule(
    name="daily_monitoring_schedule",
    cron_schedule="30 1 * * *",
    job=daily_monitoring_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "01:30 UTC: daily monitoring of yesterday's decisions, and realized performance of the "
        "day whose labels matured (maturity_days ago)."
    ),
)
def daily_monitoring_schedule(context: dg.ScheduleEvaluationContext):
    now = context.scheduled_execution_time
    yesterday = (now - timedelta(days=1)).date()
    matured = (now - timedelta(days=1 + RealizedConfig().maturity_days)).date()
    yield dg.RunRequest(run_key=f"daily-{yesterday}", partition_key=yesterday.isoformat())
    yield dg.RunRequest(
        run_key=f"matured-{matured}",
        partition_key=matured.isoformat(),
        asset_selection=[REALIZED_KEY],
    )
