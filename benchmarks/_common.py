"""Shared helpers of the benchmark scripts (not a benchmark itself).

Convention of every ``benchmarks/NAME.py``: run from the repo root as
``.venv/bin/python benchmarks/NAME.py [--quick]``; readable lines first, then as the LAST line of
stdout exactly one JSON object with the figures. ``--quick`` finishes in under a minute.

The machine is small and shared, so absolute numbers are noisy: each benchmark measures its
baseline in the same run and reports the ratio.

Only the standard library at import time: ``_feast_worker.py`` imports this module in the Feast
venv, which has no fraud_platform and none of its dependencies.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import socket
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# The benchmarks own this Redis database: flushed before and after each run. The tests use 0 and 7.
BENCH_REDIS_URL = "redis://127.0.0.1:6379/9"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb() -> float:
    """This process image's high-water RSS in MB (VmHWM from /proc/self/status; ``ru_maxrss``
    would include the parent's, which Linux carries into a child across fork+exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return ordered[int(rank) - 1]


def latency_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / mean in milliseconds of durations given in seconds."""
    ordered = sorted(samples_s)
    return {
        "p50": round(statistics.median(ordered) * 1000, 4),
        "p99": round(percentile(ordered, 99) * 1000, 4),
        "mean": round(statistics.fmean(ordered) * 1000, 4),
    }


def redis_client(url: str = BENCH_REDIS_URL) -> Any:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"Redis not reachable at {url}: {exc}") from None
    return client


def profiled(fn: Callable[[], T], top: int = 10) -> tuple[T, str]:
    """Run ``fn`` under cProfile; returns its result and the top-``top`` report (tottime and
    cumulative). Only the calling thread is seen: librdkafka's threads and Rust/C code appear
    as the Python call that waits on them."""
    profile = cProfile.Profile()
    result = profile.runcall(fn)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs()
    out.write(f"--- top {top} by own time (tottime) ---\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write(f"--- top {top} by cumulative time ---\n")
    stats.sort_stats("cumulative").print_stats(top)
    return result, out.getvalue()


def emit(results: dict[str, Any], lines: Sequence[str] = ()) -> None:
    """Readable lines, then the figures as one JSON object on the last line of stdout."""
    for line in lines:
        print(line)
    for key, value in results.items():
        print(f"{key}: {value}")
    sys.stdout.flush()
    print(json.dumps(results, sort_keys=False, default=str), flush=True)


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"  # the machine's PostgreSQL (trust auth)


def admin_pg(statement: str) -> None:
    """Run one statement on the server's ``postgres`` database, autocommit (CREATE/DROP DATABASE)."""
    import psycopg2

    conn = psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()
