"""schemathesis against a real ``bentoml serve``, driven by the published ``/docs.json``:
every phase (examples, coverage, fuzzing, stateful), every check, bounded in examples and
time; the run must end with no failure of any check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Server

pytestmark = pytest.mark.serving

MAX_EXAMPLES = 50  # per operation and phase
MAX_TIME_S = 60  # the whole run's budget (fuzzing repeats until it is spent)
REQUEST_TIMEOUT_S = 10
HOOKS = "tests.serving.schemathesis_hooks"
REPO_ROOT = Path(__file__).resolve().parents[2]


def schemathesis_command(url: str, report_dir: Path) -> list[str]:
    return [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/docs.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--max-time",
        str(MAX_TIME_S),
        "--request-timeout",
        str(REQUEST_TIMEOUT_S),
        "--workers",
        "1",
        "--seed",
        "20261205",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir / "reports"),
        "--no-color",
    ]


def test_schemathesis_finds_no_failure(scorer: Server, tmp_path: Path):
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        schemathesis_command(scorer.url, tmp_path),
        cwd=tmp_path,  # schemathesis keeps a .schemathesis/ cache in its working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=MAX_TIME_S + 120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20_000:]
    assert "No issues found" in output, output[-20_000:]
    print(output[output.find("Test Phases:") :])  # the summary, shown with pytest -rP
    assert scorer.process.poll() is None, scorer.log_tail()
