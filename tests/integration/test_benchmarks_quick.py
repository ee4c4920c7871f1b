"""Every benchmark runs in --quick mode, ends with one JSON object and reports no data loss.

Speed is not asserted here (the machine is shared and noisy); correctness figures are.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(name: str, timeout_s: float = 300) -> dict:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_benchmark_ingest_quick_loses_and_duplicates_nothing() -> None:
    figures = _run("ingest")
    assert figures["duplicates"] == 0 and figures["lost"] == 0
    assert figures["bronze_rows"] == figures["events"]
    assert figures["bronze_events_per_s"] > 0 and figures["raw_consume_events_per_s"] > 0


def test_benchmark_online_fetch_quick_reads_back_what_was_written() -> None:
    figures = _run("online_fetch")
    assert figures["checked_entities"] > 0
    assert {"p50_ms", "p99_ms", "raw_p50_ms", "raw_p99_ms", "ratio_p99", "p99_ms_100"} <= set(
        figures
    )


def test_benchmark_snapshot_quick_writes_exact_values() -> None:
    figures = _run("snapshot")
    assert figures["mismatches"] == 0 and figures["checked_keys"] > 0
    assert figures["rows_per_s"] > 0


def test_benchmark_scoring_quick_reports_http_and_in_process_paths() -> None:
    figures = _run("scoring")
    assert {"/score", "/ping", "/livez"} <= set(figures["http_ms"])
    assert figures["in_process_ms"]["total_approve"]["p50"] > 0


def test_benchmark_serving_load_quick_drives_ping_and_score_open_loop() -> None:
    figures = _run("serving_load")
    keys = {"rate", "p50_ms", "p99_ms", "ping_p50_ms", "errors", "shed", "capacity_rps"}
    assert keys | {"goodput_at_2x_rps", "soak_rss_growth"} <= set(figures)
    assert figures["rate"] == 300 and figures["p50_ms"] > 0 and figures["ping_p50_ms"] > 0
    assert {row["endpoint"] for row in figures["table"]} == {"/ping", "/score"}
    assert all(row["sent"] == 6_000 for row in figures["table"])  # 5 rounds of 4 s
    # the median of the 5 rounds' /score over /ping p50, each round's pair minutes apart at most
    assert len(figures["p50_ratios"]) == 5
    assert figures["p50_ratio_score_over_ping"] == sorted(figures["p50_ratios"])[2] > 0
    assert figures["one_row_vs_batch_score_mismatches"] == 0  # the service's score = batch's


def test_benchmark_refusal_cost_quick_refuses_every_request_both_ways() -> None:
    figures = _run("refusal_cost")
    assert {row["protocol"] for row in figures["rows"]} == {"uvicorn", "early_refusal"}
    for row in figures["rows"]:
        # a bound of 0: the shedder (in the app, or for it in the protocol) refuses everything
        assert row["sent"] > 0 and row["shed"] == row["sent"] and row["errors"] == 0
        assert row["server_cpu_us_per_refusal"] > 0


def test_benchmark_import_files_quick_reimport_adds_nothing() -> None:
    figures = _run("import_files")
    assert figures["events"] == 200_000
    assert figures["accepted"] + figures["dead_letters"] == figures["events"]
    assert figures["bronze_rows"] == figures["accepted"] and figures["dead_letters"] > 0
    assert figures["dead_letter_rows"] == figures["dead_letters"]
    assert figures["reimport_added"] == 0
    assert figures["import_events_per_s"] > 0


def test_benchmark_own_data_quick_compares_the_candidates_on_a_later_window() -> None:
    figures = _run("own_data")
    keys = {"events", "import_events_per_s", "ap_catboost", "ap_logreg", "ap_forest", "chosen"}
    assert keys | {"cp_at_k", "validation_ap", "import_path"} <= set(figures)
    assert figures["events"] > figures["transactions"] > 0
    assert figures["import_events_per_s"] > 0 and figures["test_frauds"] > 0
    assert figures["chosen"] in ("catboost", "logreg", "forest")
    validation = figures["validation_ap"]
    assert validation[figures["chosen"]] == max(validation.values())  # the gate's rule
    assert all(0 < figures[f"ap_{kind}"] <= 1 for kind in ("catboost", "logreg", "forest"))
    assert 0 <= figures["cp_at_k"] <= 1


@pytest.mark.timeout(1800)  # the subprocess's own limit; pyproject's 900 s would cut it first
def test_benchmark_drift_recovery_quick_detects_drift_retrains_and_records_runs() -> None:
    # ~5 min on an idle 2-core machine, 21 min under a load of ~20: the daily jobs run dbt.
    figures = _run("drift_recovery", timeout_s=1800)
    assert {"detect_days", "stale_ap", "retrained_ap", "ceiling_ap", "recovery_ratio"} <= set(
        figures
    )
    # Recovery (>= 0.9 of the ceiling) is a figure to report, not an assertion. Detection is
    # asserted: the daily feature drift check failed within 2 days of drifted traffic (1 in
    # every measured run) and on no day before the switch.
    assert figures["detect_days"] is not None and 1 <= figures["detect_days"] <= 2
    assert not figures["false_alarm_before_switch"], figures["per_day"]
    drift_retrains = [r for r in figures["retrains"] if r["trigger"] == "drift"]
    # The loop closes: drift triggered retrains, and the last one reached a verdict. Either it
    # trained, passed the quality gate and reached the promotion decision (it replaced the
    # champion, or the champion defended itself on the same rows: the challenger's metric below
    # the champion's plus the margin; on 2026-12-06 with the windows of the last event, AP 0.534
    # against 0.516), or the quality gate stopped it with its own figures below its minimums
    # and nothing was promoted. The quick world's gate test split holds a handful of matured
    # frauds at most, so which verdict it gets moves with the date the world ends on and with
    # the features (2026-12-06, windows ending at the lookup: AUC 0.885 and AP 0.008 on the
    # last retrain, one fraud ranked ~120th). Any other failed step makes the benchmark raise.
    assert drift_retrains, figures["retrains"]
    decision = drift_retrains[-1]["promotion"]
    if drift_retrains[-1]["completed"]:
        assert decision is not None, drift_retrains[-1]
        if drift_retrains[-1]["promoted"]:
            assert decision["decision"] == "promoted", decision
        else:
            assert decision["decision"] == "kept champion", decision
            assert decision["challenger"] < decision["champion"] + decision["margin"], decision
    else:
        assert decision is None and not drift_retrains[-1]["promoted"], drift_retrains[-1]
    for retrain in drift_retrains:
        gate = retrain["gate"]
        assert gate is not None and gate["passed"] == retrain["completed"], retrain
        below = (
            gate["test_auc_roc"] < gate["min_auc_roc"]
            or gate["test_average_precision"] < gate["min_average_precision"]
        )
        assert below != gate["passed"], retrain
        assert retrain["completed"] or not retrain["promoted"], retrain
    assert figures["window_frauds"] > 0 and 0 < figures["ceiling_ap"] <= 1
    ratio = figures["retrained_ap"] / figures["ceiling_ap"]
    assert abs(figures["recovery_ratio"] - ratio) < 1e-3
    # every successful retrain_job run (training + gate + backtest) left one run record
    assert figures["run_records"] == sum(1 for r in figures["retrains"] if r["completed"])


def test_benchmark_stream_freshness_quick_every_online_row_exact() -> None:
    figures = _run("stream_freshness")
    assert figures["mismatches"] == 0 and figures["rows_compared"] > 0
    assert figures["events"] > 0 and figures["worker_events_per_s"] > 0
    assert {"rate", "freshness_p50_ms", "freshness_p99_ms"} <= set(figures)


def test_benchmark_dbt_incremental_quick_equals_full_refresh() -> None:
    figures = _run("dbt_incremental")
    assert figures["equal"] is True
    assert figures["history_events"] > 0 and figures["new_events"] > 0
    assert figures["full_s"] > 0 and figures["incremental_s"] > 0


@pytest.mark.timeout(1500)  # the subprocess's own limit; pyproject's 900 s would cut it first
def test_benchmark_sensor_freshness_quick_brings_every_round_online() -> None:
    # dagster dev + the sensors end to end; ~3 min on an idle 2-core machine
    figures = _run("sensor_freshness", timeout_s=1500)
    assert figures["rounds"] == len(figures["publish_to_online_s"]) >= 3
    assert 0 < figures["publish_to_bronze_p95_s"] <= figures["publish_to_online_p95_s"]
    split = figures["split_median_s"]
    assert split["ingest_steps"] > 0 and split["refresh_steps"] > 0  # the sensors launched runs


@pytest.mark.timeout(1500)  # the subprocess's own limit; pyproject's 900 s would cut it first
def test_benchmark_refresh_scaling_quick_times_an_incremental_micro_batch_per_history() -> None:
    # three histories, each set up from Kafka through every layer, then two micro-batches in
    # fresh processes: ~6 min on an idle 2-core machine, ~12 min under a load of 4-5
    figures = _run("refresh_scaling", timeout_s=1500)
    assert figures["days"] == [10, 20, 40]
    assert figures["history_events"] == sorted(figures["history_events"])
    assert figures["ratio_to_30d"][0] == 1.0 and all(s > 0 for s in figures["microbatch_s"])
    for row in figures["table"]:
        assert set(row["per_layer_s"]) == {"ingestion", "silver", "features", "snapshot"}
        assert row["bronze_rows_added"] == row["new_events"] > row["late_events"] > 0
        # each timed hour ran in its own process; the figure is their median
        assert len(row["batches_s"]) == 2 and all(s > 0 for s in row["batches_s"])
        assert min(row["batches_s"]) <= row["microbatch_s"] <= max(row["batches_s"])
        # the online snapshot after the micro-batch is incremental: it reads the stale
        # partitions only (fewer rows than a full snapshot reads) and writes some entities
        assert row["snapshot_modes"] == ["incremental"]
        assert 0 < row["snapshot_entities_written"]
        assert row["snapshot_rows_read"] < row["snapshot_full_rows_read"]
