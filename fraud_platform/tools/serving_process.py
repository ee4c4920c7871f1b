"""Start and stop the BentoML scoring service as a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fraud_platform.settings import Settings
from fraud_platform.tools.processes import spawn_logged

REPO_ROOT = Path(__file__).resolve().parents[1]


def service_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "FRAUD_PLATFORM_DATA_DIR": str(settings.data_dir),
            "BENTOML_HOME": str(settings.bentoml_home),
            "REDIS_URL": settings.redis_url,
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
            "BENTOML_DO_NOT_TRACK": "True",
        }
    )
    return env


def serve_command(port: int) -> list[str]:
    """``bentoml serve`` of the FraudScorer service on localhost (run from the repo root)."""
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "models_bento.service:FraudScorer",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def start_scoring_service(
    settings: Settings, *, port: int | None = None, timeout_s: float = 90
) -> subprocess.Popen:
    """``bentoml serve models_bento.service:FraudScorer``; returns once /readyz answers 200."""
    port = port or settings.service_port
    log_path = settings.data_dir / "scoring_service.log"
    process = spawn_logged(serve_command(port), log_path, cwd=REPO_ROOT, env=service_env(settings))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scoring service exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_scoring_service(process)
    raise TimeoutError(f"scoring service not ready after {timeout_s}s; see {log_path}")


def stop_scoring_service(process: subprocess.Popen, grace_s: float = 10) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
