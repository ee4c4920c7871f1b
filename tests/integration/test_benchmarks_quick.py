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


def _run(name: str) -> dict:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
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
    assert all(row["sent"] == 6_000 for row in figures["table"])


def test_benchmark_stream_freshness_quick_every_online_row_exact() -> None:
    figures = _run("stream_freshness")
    assert figures["mismatches"] == 0 and figures["rows_compared"] > 0
    assert figures["events"] > 0 and figures["worker_events_per_s"] > 0
    assert {"rate", "freshness_p50_ms", "freshness_p99_ms"} <= set(figures)
