"""What the demo reports: the daily monitoring runs of the replayed days, row counts, the model
and gate figures from the training layer, and the printed summary."""

from __future__ import annotations

import contextlib
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fraud_platform import names
from fraud_platform.settings import Settings
from fraud_platform.tools.demo_state import ALREADY_REPLAYED


def say(message: str) -> None:
    print(message, flush=True)


def training_metadata(layers) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's and the promotion gate's metadata from the training layer."""
    training = [layer for layer in layers if layer.layer == "training"]
    model = training[0].metadata.get(names.MODEL_ASSET, {}) if training else {}
    gate = training[0].metadata.get(names.CHAMPION_ASSET, {}) if training else {}
    return model, gate


def days_between(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


DAILY_MONITORING_SUMMARY = {
    "monitoring/daily_feature_drift": ("summary", "drifted_columns"),
    "monitoring/daily_prediction_drift": ("score_verdict", "decision_rate_verdict"),
    "monitoring/shadow_scores": ("challenger", "agreement_with_served", "note"),
    "monitoring/daily_realized_performance": ("summary", "label_coverage", "table"),
}


def daily_monitoring(instance, defs, days: list[str], log_dir: Path) -> list:
    """The daily monitoring job (drift, shadow challenger, realized performance) on the
    decision days of the replay: one run per day partition."""
    from fraud_platform.tools.pipeline import (
        QUIET_LOGS,
        LayerResult,
        _check_results,
        _materializations,
        _raise_unless_only_gated,
        peak_rss_mb,
        reset_peak_rss,
    )

    job = defs.resolve_job_def("daily_monitoring_job")
    results = []
    for day in days:
        say(f"daily monitoring of decision day {day} ...")
        started = time.perf_counter()
        reset_peak_rss()
        log_dir.mkdir(parents=True, exist_ok=True)
        with (log_dir / "daily_monitoring.log").open("a") as log, contextlib.redirect_stdout(log):
            result = job.execute_in_process(
                instance=instance, partition_key=day, run_config=QUIET_LOGS, raise_on_error=False
            )
        _raise_unless_only_gated(result, f"daily monitoring {day}")
        layer = LayerResult(
            layer=f"daily_monitoring {day}",
            seconds=time.perf_counter() - started,
            peak_rss_mb=peak_rss_mb(),
            assets=sorted(_materializations(result)),
            metadata=_materializations(result),
        )
        layer.checks, layer.warnings, layer.blocked = _check_results(result)
        for asset, keys in DAILY_MONITORING_SUMMARY.items():
            shown = {k: layer.metadata.get(asset, {}).get(k) for k in keys}
            say(
                f"  {asset}: "
                + "; ".join(f"{k}: {v}" for k, v in shown.items() if v not in (None, ""))
            )
        results.append(layer)
    return results


def warehouse_rows(settings: Settings) -> dict[str, int]:
    """Row counts of the dbt-built silver and gold tables."""
    import duckdb

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as connection:
        tables = connection.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('silver', 'gold') and table_type = 'BASE TABLE'"
        ).fetchall()
        return {
            f"{schema}/{name}": connection.execute(
                f'select count(*) from "{schema}"."{name}"'
            ).fetchone()[0]
            for schema, name in tables
        }


def rows_per_asset(layer_results) -> dict[str, int]:
    rows: dict[str, int] = {}
    for layer in layer_results:
        for asset, metadata in layer.metadata.items():
            for key in ("dagster/row_count", "keys_written", "rows_added"):
                if key in metadata and isinstance(metadata[key], int | float):
                    rows[asset] = int(metadata[key])
                    break
    return rows


def print_summary(summary: dict[str, Any], path: Path) -> None:
    say("\n=== fraud-platform demo summary ===")
    say(
        f"events published / ingested this run: {summary['events_published']:,} / {summary['events_ingested']:,}"
    )
    say("rows per asset:")
    for asset, rows in sorted(summary["rows_per_asset"].items()):
        say(f"  {asset:45s} {rows:>10,}")
    say(
        f"model {summary['model_tag']}: test AUC {summary['test_auc']:.4f}, AP {summary['test_average_precision']:.4f}"
    )
    say(
        f"promotion gate: {summary['promotion']['decision']} ({summary['promotion']['reason']}); "
        f"champion {summary['champion']}"
    )
    say(
        f"held-out replay: {summary['scored']:,} scored, decisions {summary['decisions']}, degraded {summary['degraded']}"
    )
    if summary.get("degraded"):
        say(f"  degraded answers by reason: {summary.get('degraded_reasons')}")
    if "online_keys_before_replay" in summary:
        say(
            f"  online store as the replay started: {summary['online_keys_before_replay']:,} "
            f"keys, snapshot checkpoints of {summary['snapshot_checkpoints_before_replay']} groups"
        )
    say(
        f"  decisions ingested from the scores topic into bronze/scores: {summary['decisions_ingested']:,}"
    )
    say(f"  replay AUC {summary['replay_auc']}, AP {summary['replay_average_precision']}")
    if summary.get("replay_mode") == ALREADY_REPLAYED:
        say(
            "  the held-out period was replayed by an earlier run in this data directory: these "
            "are its figures (`fraud-platform demo --fresh` replays it again)"
        )
    if summary.get("replay_mode") == "real time":
        say(
            f"  online freshness (event produced -> row readable): p50 "
            f"{summary['online_freshness_p50_ms']} ms, p99 {summary['online_freshness_p99_ms']} ms "
            f"({summary['online_freshness_samples']:,} rows, "
            f"{summary['online_freshness_never_seen']} never seen); {summary['replay_mode']}"
        )
        say(
            "  each transaction scored once the stream worker had applied every event published "
            f"before it: waited p50 {summary['applied_wait_p50_ms']} ms, "
            f"p99 {summary['applied_wait_p99_ms']} ms"
        )
    if "offline_average_precision" in summary:
        say(
            f"  offline point-in-time backtest of the same transactions: AP "
            f"{summary['offline_average_precision']} (online {summary['replay_average_precision']}); "
            f"{summary['online_offline_scores_differing']} scores differ, max "
            f"{summary['online_offline_score_max_abs_diff']} "
            f"({summary.get('online_offline_undegraded_scores_differing', 'n/a')} of them "
            "not degraded answers)"
        )
    say(
        f"scoring latency (HTTP, client side): p50 {summary['score_p50_ms']} ms, p99 {summary['score_p99_ms']} ms"
    )
    warned = summary["check_warnings"]
    failed = [name for name, ok in summary["checks"].items() if not ok and name not in warned]
    say(
        f"asset checks: {len(summary['checks']) - len(failed) - len(warned)} passed, "
        f"{len(failed)} failed {failed or ''}"
        + (f", {len(warned)} warning(s) {warned}" if warned else "")
    )
    say(f"Dagster UI: {summary['dagster_ui']}")
    say(f"scoring service: {summary['scoring_service']}")
    say(f"wall time: {summary['wall_s']} s; summary written to {path}")
