"""The rows of ``serving_load.py``'s table: one per phase and server, and their text form."""

from __future__ import annotations

from typing import Any


def row(endpoint: str, rate: Any, figures: dict[str, Any]) -> dict[str, Any]:
    keys = ("sent", "ok", "shed", "errors", "goodput_rps", "p50_ms", "p99_ms", "p999_ms")
    return {
        "endpoint": endpoint,
        "rate": rate,
        **{k: figures.get(k) for k in keys},
        "send_lag_p99_ms": figures.get("send_lag_p99_ms"),
        "p50_from_send_ms": figures.get("p50_from_send_ms"),
        "p99_from_send_ms": figures.get("p99_from_send_ms"),
        "generator_cpu_ms_per_req": figures.get("cpu_ms_per_req"),
        "generator_nice": figures.get("nice"),
        "statuses": figures.get("statuses"),
        "server_cpu_ms_per_req": figures.get("server_cpu_ms_per_req"),
        "server_runqueue_wait_ms_per_req": figures.get("server_runqueue_wait_ms_per_req"),
        "loadavg_1m": figures.get("loadavg_1m"),
        "server_p50_ms_bucket": figures.get("server_p50_ms"),
        "server_p99_ms_bucket": figures.get("server_p99_ms"),
    }


def table_lines(table: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'endpoint':32s} {'rate':>6s} {'sent':>7s} {'ok':>7s} {'shed':>6s} {'err':>6s} "
        f"{'goodput':>8s} {'p50':>8s} {'p99':>8s} {'p99.9':>8s} {'lag99':>7s} {'cpu/req':>7s} "
        f"{'rqwait':>7s} {'load':>5s} {'srv99':>6s} {'sent99':>7s} {'gen/req':>7s}"
    ]
    for r in table:
        lines.append(
            f"{r['endpoint']:32s} {r['rate']!s:>6s} {r['sent']:>7} {r['ok']:>7} {r['shed']:>6} "
            f"{r['errors']:>6} {r['goodput_rps']!s:>8s} {r['p50_ms']!s:>8s} {r['p99_ms']!s:>8s} "
            f"{r['p999_ms']!s:>8s} {r['send_lag_p99_ms']!s:>7s} "
            f"{r['server_cpu_ms_per_req']!s:>7s} {r['server_runqueue_wait_ms_per_req']!s:>7s} "
            f"{r['loadavg_1m']!s:>5s} {r['server_p99_ms_bucket']!s:>6s} "
            f"{r['p99_from_send_ms']!s:>7s} {r['generator_cpu_ms_per_req']!s:>7s}"
        )
    return lines
