"""Capacity of a service as the highest open-loop rate it sustains within a budget.

A rate *passes* when, over one open-loop step at that rate:

* the answered p99 (from the scheduled send time) is at most ``P99_BUDGET_MS``;
* shed (429/503) plus errors are at most ``REFUSED_BUDGET`` of the requests sent;
* the goodput (200s per second, the tail's drain included) is at least ``ACHIEVED_BUDGET`` of
  the offered rate (a server that falls behind drains late and fails this).

The search: from ``start`` the rate grows by ``GROWTH`` per step until a step fails (or
``max_rps``), then bisects between the last pass and the first fail until they are within
``RESOLUTION`` of each other or ``max_steps`` steps were run. Capacity is the highest passing
rate (None when not even the first step passes, which the caller may then retry lower).
Kept apart from ``serving_load.py`` (which drives it) for its length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

P99_BUDGET_MS = 50.0
REFUSED_BUDGET = 0.005
ACHIEVED_BUDGET = 0.99
GROWTH = 1.5
RESOLUTION = 0.05


def verdict(rate: float, figures: dict[str, Any]) -> tuple[bool, str]:
    """(passes, why not) for one step's generator figures at the offered ``rate``."""
    sent = max(int(figures.get("sent") or 0), 1)
    refused = (figures.get("shed") or 0) + (figures.get("errors") or 0)
    p99 = figures.get("p99_ms")
    goodput = figures.get("goodput_rps") or 0.0
    if p99 is None or p99 > P99_BUDGET_MS:
        return False, f"p99 {p99} ms > {P99_BUDGET_MS:g}"
    if refused / sent > REFUSED_BUDGET:
        return False, f"refused {refused}/{sent} > {REFUSED_BUDGET:.1%}"
    if goodput < ACHIEVED_BUDGET * rate:
        return False, f"goodput {goodput} < {ACHIEVED_BUDGET:.0%} of {rate:g}"
    return True, ""


def search_capacity(
    probe: Callable[[int], dict[str, Any]],
    *,
    start: int = 400,
    max_rps: int = 6_000,
    max_steps: int = 11,
) -> tuple[int | None, list[dict[str, Any]]]:
    """(capacity in req/s, the trace: one entry per step, its ``figures`` the probe's) with ``probe(rate)`` running one
    open-loop step at ``rate`` and returning the generator's figures."""
    trace: list[dict[str, Any]] = []

    def step(rate: int) -> bool:
        figures = probe(rate)
        ok, why = verdict(rate, figures)
        trace.append(
            {
                "rate": rate,
                "passed": ok,
                "why": why or None,
                "goodput_rps": figures.get("goodput_rps"),
                "p99_ms": figures.get("p99_ms"),
                "shed": figures.get("shed"),
                "errors": figures.get("errors"),
                "server_cpu_ms_per_req": figures.get("server_cpu_ms_per_req"),
                "loadavg_1m": figures.get("loadavg_1m"),
                "ok_per_server_cpu_s": figures.get("ok_per_server_cpu_s"),
                "figures": figures,  # all of them, for the caller's table
            }
        )
        return ok

    passed: int | None = None
    failed: int | None = None
    rate = start
    while len(trace) < max_steps:
        if step(rate):
            passed = rate
            if rate >= max_rps:
                break
            rate = min(max_rps, round(rate * GROWTH))
        else:
            failed = rate
            break
    if passed is None and failed is not None:  # the first step failed: search below it
        low = failed
        while passed is None and len(trace) < max_steps and low > 25:
            low = round(low / 2)
            if step(low):
                passed = low
            else:
                failed = low
    while (
        passed is not None
        and failed is not None
        and failed - passed > RESOLUTION * passed
        and len(trace) < max_steps
    ):
        middle = round((passed + failed) / 2)
        if step(middle):
            passed = middle
        else:
            failed = middle
    return passed, trace
