"""`fraud-platform demo` end to end in a subprocess, twice: the main job works and a second run
adds nothing. Real embedded broker, real Redis, real dbt, a real BentoML server."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.integration.conftest import free_port
from tests.redis_server import redis_db_url

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
REDIS_DB_URL = redis_db_url(6)
SUMMARY_KEYS = {
    "events_ingested",
    "rows_per_asset",
    "test_auc",
    "test_average_precision",
    "decisions",
    "score_p50_ms",
    "score_p99_ms",
    "wall_s",
}

SKEW_CHECK = "monitoring/served_traffic_profile:served_features_match_offline"
DRIFT_CHECKS = {
    "monitoring/served_traffic_profile:served_features_have_not_drifted",
    "monitoring/daily_feature_drift:daily_features_have_not_drifted",
    # a linear model (when the gate picks one) extrapolates the stale features: its scores drift
    "monitoring/daily_prediction_drift:daily_scores_have_not_drifted",
}


def _demo(env: dict[str, str], *options: str) -> dict:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "fraud-platform"),
            "demo",
            *(options or ("--snapshot", "--days", "24", "--users", "400", "--replay-limit", "150")),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "=== fraud-platform demo summary ===" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("still running: ") and "the embedded Kafka broker" in last, last
    assert last.endswith("stop with `fraud-platform services down`"), last
    return json.loads(Path(env["FRAUD_PLATFORM_DATA_DIR"], "demo_summary.json").read_text())


@pytest.fixture
def demo_env(tmp_path: Path, pg_database: str) -> Iterator[dict[str, str]]:
    """The demo's environment: its own data dir, ports and Redis database; services stopped
    and the database emptied afterwards."""
    env = {
        **os.environ,
        "FRAUD_PLATFORM_DATA_DIR": str(tmp_path / "data"),
        "FRAUD_PLATFORM_KAFKA_PORT": str(free_port()),
        "FRAUD_PLATFORM_SERVICE_PORT": str(free_port()),
        "REDIS_URL": REDIS_DB_URL,
        "FRAUD_PLATFORM_PROFILES_PG_URL": pg_database,
    }
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "DAGSTER_HOME", "FRAUD_PLATFORM_DAGSTER_PG_URL"):
        env.pop(name, None)
    redis.Redis.from_url(REDIS_DB_URL).flushdb()
    try:
        yield env
    finally:
        subprocess.run(
            [str(Path(sys.executable).parent / "fraud-platform"), "services", "down"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
        )
        redis.Redis.from_url(REDIS_DB_URL).flushdb()


def test_demo_runs_end_to_end_and_a_second_run_adds_nothing(
    demo_env: dict[str, str],
) -> None:
    env = demo_env
    first = _demo(env)
    assert SUMMARY_KEYS <= set(first)
    assert first["events_ingested"] == first["events_published"] > 10_000
    assert first["scored"] == sum(first["decisions"].values()) > 100
    assert first["decisions_ingested"] == first["scored"]  # every decision, once
    assert 0.5 < first["test_auc"] <= 1.0
    # warnings, and no failures except the drift checks: the demo replays against an online
    # snapshot up to two days stale, so time-since features drift for real, and the share
    # that KS flags grows with the decisions logged (the second run doubles them)
    failed = [k for k, ok in first["checks"].items() if not ok]
    assert set(failed) <= set(first["check_warnings"]) | DRIFT_CHECKS, failed
    assert first["promotion"]["decision"] == "promoted"
    assert first["champion"] == first["model_tag"]
    assert (
        first["rows_per_asset"]["silver/fct_transactions"]
        == first["rows_per_asset"]["bronze/transactions"]
    )

    second = _demo(env)
    assert second["events_published"] == 0 and second["events_ingested"] == 0
    for table in (
        "bronze/transactions",
        "silver/fct_transactions",
        "silver/fct_labels",
        "training/fraud_training_set",
    ):
        assert second["rows_per_asset"][table] == first["rows_per_asset"][table], table
    assert second["test_auc"] == first["test_auc"]  # same data, same seed: same model
    # an identical challenger is not better by the margin: the gate keeps the champion
    assert second["promotion"]["decision"] == "kept champion", second["promotion"]
    assert second["champion"] == first["model_tag"]
    gate = "serving/fraud_catboost_champion:challenger_beats_champion"
    assert not second["checks"][gate] and gate in second["check_warnings"]
    failed = [k for k, ok in second["checks"].items() if not ok]
    assert set(failed) <= set(second["check_warnings"]) | DRIFT_CHECKS, failed
    assert second["checks"]["monitoring/served_traffic_profile:served_features_match_offline"]
    _skew_check_catches_a_tampered_value(Path(env["FRAUD_PLATFORM_DATA_DIR"]))


def test_realtime_demo_streams_the_held_out_period_and_the_batch_path_catches_up(
    demo_env: dict[str, str],
) -> None:
    """``demo`` (real time by default): the stream worker starts where bronze stands, the
    held-out period is published while it runs and scored as it arrives, then the batch path
    catches up, and the online scores equal the offline point-in-time backtest's. The online
    store starts without an earlier run's keys; a second run does not replay the period again
    (the online store moved past it) and reports the first run's figures."""
    options = ("--days", "24", "--users", "300", "--replay-limit", "100", "--replay-rate", "300")
    left = redis.Redis.from_url(REDIS_DB_URL)
    left.set("fp:5:user_txn_velocity:v2:{user:u1}", b"an earlier run's row")
    left.hset("fps:2:{transactions:user:u1}", "v", 1)
    left.set("not-the-platform's", b"kept")
    summary = _demo(demo_env, *options)
    assert not left.exists("fp:5:user_txn_velocity:v2:{user:u1}", "fps:2:{transactions:user:u1}")
    assert left.get("not-the-platform's") == b"kept"
    assert summary["replay_mode"] == "real time"
    assert summary["stream_started_from"] == "bronze"
    assert summary["stream_seeded_events"] > 5_000
    assert summary["replay_events_published"] > 500
    assert summary["stream_lag_final"] == 0  # the worker applied every held-out event
    assert summary["online_freshness_samples"] > 0
    # published = ingested: the history, then the held-out period in the catch-up
    assert summary["events_ingested"] == summary["events_published"]
    assert summary["scored"] == sum(summary["decisions"].values()) > 50
    assert summary["decisions_ingested"] == summary["scored"]
    # each transaction was scored once the worker had applied every event published before
    # it: what the service served equals the offline point-in-time backtest, except where it
    # answered degraded (a missing group, a Redis timeout: the stated degraded policy)
    assert summary["applied_wait_p50_ms"] is not None
    assert summary["online_offline_undegraded_scores_differing"] == 0
    assert summary["online_offline_scores_differing"] <= summary["degraded"]
    assert summary["checks"][SKEW_CHECK]
    failed = [k for k, ok in summary["checks"].items() if not ok]
    assert set(failed) <= set(summary["check_warnings"]) | DRIFT_CHECKS, failed

    second = _demo(demo_env, *options)
    assert second["replay_mode"].startswith("already replayed"), second["replay_mode"]
    assert second["events_published"] == 0 and second["decisions_ingested"] == 0
    for figure in (
        "scored",
        "decisions",
        "degraded",
        "replay_average_precision",
        "offline_average_precision",
        "online_offline_undegraded_scores_differing",
    ):
        assert second[figure] == summary[figure], figure
    failed = [k for k, ok in second["checks"].items() if not ok]
    assert set(failed) <= set(second["check_warnings"]) | DRIFT_CHECKS, failed


def _skew_check_catches_a_tampered_value(data_dir: Path) -> None:
    """The served-vs-offline comparison is exact on the demo's decisions (bronze/scores), and
    sees one changed value."""
    import polars as pl

    from fraud_platform.defs.monitoring.assets import compare_served_with_offline
    from fraud_platform.lib.monitoring.decisions import read_decisions
    from fraud_platform.lib.storage.delta import DeltaStore

    delta = DeltaStore(str(data_dir / "delta"))
    log = read_decisions(delta).filter(~pl.col("degraded"))
    assert log.height > 0
    assert compare_served_with_offline(log, delta)["max_mismatch_rate"] == 0.0
    tampered = log.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.col("f_user_txn_count_24h") + 1)
        .otherwise(pl.col("f_user_txn_count_24h"))
        .alias("f_user_txn_count_24h")
    )
    report = compare_served_with_offline(tampered, delta)
    assert report["features_with_skew"] == ["user_txn_count_24h"]
    assert report["features"]["user_txn_count_24h"]["mismatches"] == 1
