"""What ``serving_load.py`` reads about the server it loads: RSS, CPU and run-queue wait of its
process tree (from /proc), and BentoML's and our figures from its ``/metrics``."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_rss_mb(root: int) -> dict[int, float]:
    """RSS of ``root`` and all its descendants (BentoML's workers run in their own sessions)."""
    parent: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines()
            )
            parent[int(entry.name)] = int(status["PPid"])
            rss[int(entry.name)] = round(int(status.get("VmRSS", "0 kB").split()[0]) / 1024, 1)
        except (OSError, ValueError, KeyError):
            continue
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, ppid in parent.items() if ppid in tree} - tree
        tree |= more
        grown = bool(more)
    return {pid: rss[pid] for pid in sorted(tree) if pid in rss}


def server_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its descendants."""
    total = 0.0
    for pid in server_rss_mb(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def server_runqueue_wait_s(root: int) -> float:
    """Seconds the threads of ``root`` and its descendants spent runnable but waiting for a CPU
    (``/proc/<pid>/task/<tid>/schedstat``): on a shared machine, the neighbours' share of the
    latency."""
    total = 0
    for pid in server_rss_mb(root):
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                total += int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


def degraded_answers(url: str) -> dict[str, float] | str:
    """``fraud_scorer_degraded_total`` by reason, summed over the workers (from /metrics); what
    went wrong instead when /metrics did not answer (the run's figures matter more)."""
    import httpx

    try:
        exposition = httpx.get(f"{url}/metrics", timeout=60).text
    except httpx.HTTPError as exc:
        return f"/metrics: {type(exc).__name__}: {exc}"
    counts: dict[str, float] = {}
    for line in exposition.splitlines():
        match = re.match(r'fraud_scorer_degraded_total\{reason="([^"]+)"\} (\S+)', line)
        if match:
            counts[match[1]] = counts.get(match[1], 0.0) + float(match[2])
    return counts


def server_duration_buckets(url: str, endpoint: str = "/score") -> dict[float, float]:
    """BentoML's own request-duration histogram for ``endpoint``'s 200s, summed over the
    workers: cumulative count by upper bound (seconds). Its outermost middleware starts the
    clock, so the time a request waited in the kernel or the generator before the server read
    it is not in it: the difference to the generator's latency is that wait."""
    import httpx

    counts: dict[float, float] = {}
    pattern = re.compile(r"bentoml_service_request_duration_seconds_bucket\{([^}]*)\} (\S+)")
    for line in httpx.get(f"{url}/metrics", timeout=60).text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        if labels.get("endpoint") != endpoint or labels.get("http_response_code") != "200":
            continue
        bound = float(labels["le"])
        counts[bound] = counts.get(bound, 0.0) + float(match[2])
    return counts


def histogram_quantile_ms(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """The upper bound (ms) of the bucket holding quantile ``q`` of what was observed between
    two ``server_duration_buckets`` readings."""
    diff = sorted((bound, after[bound] - before.get(bound, 0.0)) for bound in after)
    total = diff[-1][1] if diff else 0
    if not total:
        return None
    for bound, count in diff:
        if count >= q * total:
            return round(bound * 1000, 3)
    return None


def decision_log_stats(server_log: str) -> list[dict[str, int]]:
    """What each worker's decision log says at shutdown (appended, delivered, dropped)."""
    return [
        ast.literal_eval(match)
        for match in re.findall(r"decision log closed: (\{[^}]*\})", server_log)
    ]


def shed_requests(url: str) -> dict[str, float]:
    """``fraud_scorer_shed_requests_total`` by reason, summed over the workers (from /metrics)."""
    import httpx

    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=60).text.splitlines():
        match = re.match(r'fraud_scorer_shed_requests_total\{reason="([^"]+)"\} (\S+)', line)
        if match:
            counts[match[1]] = counts.get(match[1], 0.0) + float(match[2])
    return counts
