"""One phase of ``serving_load.py``: the open-loop generator (``_open_loop.py``) in its own
process against one server, with the server's side of it (CPU, run-queue wait, shed, its own
latency histogram) read around the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import REPO_ROOT
from benchmarks._server_stats import (
    histogram_quantile_ms,
    server_cpu_s,
    server_duration_buckets,
    server_runqueue_wait_s,
    shed_requests,
)
from tests.serving.conftest import Server

GENERATOR = REPO_ROOT / "benchmarks" / "_open_loop.py"


def drive(
    url: str,
    bodies: Path,
    *,
    rate: float = 0,
    duration: float,
    closed: int = 0,
    bucket_s: float | None = None,
    latencies_out: Path | None = None,
) -> dict[str, Any]:
    """One run of the generator in its own process; its JSON summary."""
    command = [sys.executable, str(GENERATOR), "--url", url, "--bodies", str(bodies)]
    command += ["--duration", str(duration)]
    command += ["--closed", str(closed)] if closed else ["--rate", str(rate)]
    if bucket_s:
        command += ["--bucket-s", str(bucket_s)]
    if latencies_out:
        command += ["--latencies-out", str(latencies_out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measured(server: Server, url: str, body_file: Path, **kwargs: Any) -> dict[str, Any]:
    """``drive`` plus the server's CPU per request sent (robust to a noisy machine: the
    neighbours' load shows in latency, not in our CPU) and the load average after."""
    pid = server.process.pid
    cpu = server_cpu_s(pid)
    waited = server_runqueue_wait_s(pid)
    histogram = server_duration_buckets(server.url)
    shed = shed_requests(server.url)
    figures = drive(url, body_file, **kwargs)
    if url.endswith("/score"):
        histogram_after = server_duration_buckets(server.url)
        for name, q in (("server_p50_ms", 0.5), ("server_p99_ms", 0.99)):
            figures[name] = histogram_quantile_ms(histogram, histogram_after, q)
    figures["server_shed"] = {
        reason: count - shed.get(reason, 0.0) for reason, count in shed_requests(server.url).items()
    }
    used = server_cpu_s(pid) - cpu
    waited = server_runqueue_wait_s(pid) - waited
    figures["server_cpu_ms_per_req"] = round(used * 1000 / max(figures["sent"], 1), 3)
    figures["server_runqueue_wait_ms_per_req"] = round(waited * 1000 / max(figures["sent"], 1), 3)
    figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return figures


def ok_per_cpu_s(figures: dict[str, Any]) -> float | None:
    """200s per second of server CPU: the goodput a phase would have had with the whole machine
    (the neighbours' share of the CPU changes between phases; this does not follow it)."""
    cpu_s = figures["server_cpu_ms_per_req"] * figures["sent"] / 1000
    return round(figures["ok"] / cpu_s, 1) if cpu_s else None
