"""``/ping`` against ``/score`` at one rate in alternating short rounds (``serving_load.py``).

One 20-s phase of each, one after the other, compared two medians taken up to a minute apart
on a shared machine: a neighbour's burst during one of them moved the ratio by 0.2-0.3 (1.13-
1.43x in runs of the same code). Here each server gets ``rounds`` rounds of ``/ping`` then
``/score`` (with a baseline: this tree's pair, then the baseline's, round after round), each
``duration / rounds`` seconds, so both endpoints (and both builds) sample the same minutes.

Per endpoint: the rounds' figures merged (counts summed; p50/p99/p99.9 over every answered
request of every round, from the generator's ``--latencies-out``; the server's CPU per request
weighted by requests sent; the worst send lag, load average and server p99 bucket).
``p50_ratio_score_over_ping``: the median over rounds of ``/score``'s p50 over the ``/ping``
p50 of the same round (``p50_ratios``: each round's), robust to one disturbed round.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._open_loop import _percentile

# measure(server, endpoint, rate, seconds, latencies_out) -> the generator's figures
Measure = Callable[[Any, str, float, float, Path], dict[str, Any]]
ENDPOINTS = ("/ping", "/score")
SUMMED = ("sent", "ok", "shed", "errors")
WEIGHTED = ("cpu_ms_per_req", "server_cpu_ms_per_req", "server_runqueue_wait_ms_per_req")
WORST = ("send_lag_p99_ms", "p99_from_send_ms", "loadavg_1m", "server_p99_ms")
MEDIAN = ("p50_from_send_ms", "server_p50_ms", "goodput_rps")


def alternating_rounds(
    servers: list[tuple[str, Any]],
    measure: Measure,
    rate: float,
    duration: float,
    rounds: int,
    tmp: Path,
) -> dict[str, dict[str, Any]]:
    """For each server label: ``{"/ping": merged, "/score": merged, "p50_ratios": [...],
    "p50_ratio_score_over_ping": median}``."""
    round_s = duration / rounds
    runs: dict[tuple[str, str], list[tuple[dict[str, Any], Path]]] = {}
    for number in range(rounds):
        for label, server in servers:
            for endpoint in ENDPOINTS:
                out = tmp / f"latencies-{label or 'this'}-{endpoint[1:]}-{rate}-{number}.txt"
                got = measure(server, endpoint, rate, round_s, out)
                runs.setdefault((label, endpoint), []).append((got, out))
    results: dict[str, dict[str, Any]] = {}
    for label, _ in servers:
        ping, score = (runs[(label, endpoint)] for endpoint in ENDPOINTS)
        ratios = [
            round(s["p50_ms"] / p["p50_ms"], 3)
            for (p, _), (s, _) in zip(ping, score, strict=True)
            if s["p50_ms"] and p["p50_ms"]
        ]
        results[label] = {
            "/ping": merge(ping),
            "/score": merge(score),
            "p50_ratios": ratios,
            "p50_ratio_score_over_ping": round(statistics.median(ratios), 3) if ratios else None,
        }
    return results


def merge(runs: list[tuple[dict[str, Any], Path]]) -> dict[str, Any]:
    """One endpoint's rounds as one phase's figures (the keys ``_load_table.row`` reads)."""
    figures = [got for got, _ in runs]
    latencies = sorted(
        float(line) / 1000 for _, path in runs for line in path.read_text().split() if line
    )
    sent = sum(f["sent"] for f in figures)
    merged: dict[str, Any] = {key: sum(f[key] for f in figures) for key in SUMMED}
    statuses: dict[str, int] = {}
    shed: dict[str, float] = {}
    for f in figures:
        for status, count in f.get("statuses", {}).items():
            statuses[status] = statuses.get(status, 0) + count
        for reason, count in f.get("server_shed", {}).items():
            shed[reason] = shed.get(reason, 0.0) + count
    merged |= {"statuses": statuses, "server_shed": shed, "rounds": len(figures)}
    for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        merged[key] = _percentile(latencies, q)
    merged["round_p50_ms"] = [f["p50_ms"] for f in figures]
    for key in WEIGHTED:
        values = [(f[key], f["sent"]) for f in figures if f.get(key) is not None]
        merged[key] = round(sum(v * n for v, n in values) / sent, 3) if values and sent else None
    for key in WORST:
        values = [f[key] for f in figures if f.get(key) is not None]
        merged[key] = max(values) if values else None
    for key in MEDIAN:
        values = [f[key] for f in figures if f.get(key) is not None]
        merged[key] = round(statistics.median(values), 3) if values else None
    merged["nice"] = figures[0].get("nice")
    return merged
