"""``serving_load.py``'s soak: ``/score`` at a fixed rate for minutes, p99 and CPU per minute.

The soak's p99 per minute rose 4.5 -> 13-17 ms within a 10-minute run (2026-12-06). A
latency that rises with time on a shared 2-core machine has two kinds of cause: the server
(its own CPU per request grows: GC, a growing structure) or something else taking the cores.
``SoakWatch`` reads, every ``interval_s`` seconds of the soak, the CPU used by the server's
process tree, by the broker its decision log produces to, and by the whole machine
(``/proc/stat``), plus the broker's RSS: the figures that tell the two apart.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks._drive import measured
from benchmarks._server_stats import CLOCK_TICKS, server_cpu_s, server_rss_mb
from tests.serving.conftest import Server


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot, all cores (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / CLOCK_TICKS  # guest time is already in user


class SoakWatch:
    """A daemon thread sampling CPU shares every ``interval_s`` until ``stop()``."""

    def __init__(self, server_pid: int, broker_pid: int | None, interval_s: float = 60.0) -> None:
        self.server_pid = server_pid
        self.broker_pid = broker_pid
        self.interval_s = interval_s
        self.samples: list[dict[str, float | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-watch", daemon=True)

    def _reading(self) -> tuple[float, float | None, float, float]:
        broker = server_cpu_s(self.broker_pid) if self.broker_pid else None
        return time.monotonic(), broker, server_cpu_s(self.server_pid), machine_busy_s()

    def _run(self) -> None:
        last = self._reading()
        while not self._stop.wait(self.interval_s):
            now = self._reading()
            wall = now[0] - last[0]
            broker_rss = sum(server_rss_mb(self.broker_pid).values()) if self.broker_pid else None
            self.samples.append(
                {
                    # cores used over the interval (1.0 = one whole core)
                    "server_cores": round((now[2] - last[2]) / wall, 3),
                    "broker_cores": round((now[1] - last[1]) / wall, 3)
                    if now[1] is not None and last[1] is not None
                    else None,
                    "machine_cores": round((now[3] - last[3]) / wall, 3),
                    "broker_rss_mb": broker_rss,
                }
            )
            last = now

    def start(self) -> SoakWatch:
        self._thread.start()
        return self

    def stop(self) -> dict[str, list[Any]]:
        """The samples by figure: ``{"server_cores": [...], "broker_cores": [...], ...}``."""
        self._stop.set()
        self._thread.join(timeout=10)
        keys = ("server_cores", "broker_cores", "machine_cores", "broker_rss_mb")
        return {key: [s[key] for s in self.samples] for key in keys}


def soak_phase(
    server: Server, bodies: Path, *, rate: float, seconds: float, broker: int | None
) -> dict[str, Any]:
    """The soak's figures (``soak_*``; ``figures``: the generator's, for the table): p99 per
    minute, RSS of every server process at start and end, cores used per minute
    (``SoakWatch``; ``broker``: the broker's pid)."""
    rss_start = server_rss_mb(server.process.pid)
    watch = SoakWatch(server.process.pid, broker, interval_s=60).start()
    soak = measured(server, f"{server.url}/score", bodies, rate=rate, duration=seconds, bucket_s=60)
    cores = watch.stop()
    rss_end = server_rss_mb(server.process.pid)
    total_start, total_end = sum(rss_start.values()), sum(rss_end.values())
    return {
        "figures": soak,
        "soak_p99_ms_per_minute": soak["p99_ms_per_bucket"],
        "soak_errors": soak["errors"],
        "soak_shed": soak["shed"],
        "soak_server_shed": soak["server_shed"],
        "soak_p50_ms": soak["p50_ms"],
        "soak_p99_ms": soak["p99_ms"],
        "soak_rss_mb_start": rss_start,
        "soak_rss_mb_end": rss_end,
        "soak_rss_growth": round(total_end / total_start - 1, 4) if total_start else None,
        "soak_cores_per_minute": cores,
    }
