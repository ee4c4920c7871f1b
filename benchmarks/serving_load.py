"""The scoring service under open-loop load (not collected by pytest).

    .venv/bin/python benchmarks/serving_load.py [--quick]

Starts a real ``bentoml serve`` of ``models_bento.service:FraudScorer`` (workers, concurrency
limit and access log as its settings say; see ``fraud_platform.settings``) on a 400-tree
depth-6 CatBoost (``--quick``: 100 trees) registered in a temporary model store, with online
features in a private ``redis-server`` of the run for every entity of the request mix, and its decision
log produced to an embedded noida broker (so decisions are delivered, as in production, rather
than piling up for a Kafka that is not there). The mix is one simulated day (``fraud_platform.lib.simulation``: its channels, amounts, p2p counterparties),
sent without ``event_time`` (scored as of now). Before serving, the mix is scored in process
(thresholds) and ``one_row_vs_batch_score_mismatches`` counts scores of the service's one-row
path that differ from ``predict_proba`` on the same rows (0: bit-identical).

Load comes from ``benchmarks/_open_loop.py`` in its own process, at niceness -10 (when
permitted: scheduled ahead of the server on the shared cores; its own CPU per request is
reported as ``gen/req``): requests at fixed scheduled times, latency from the schedule. In the
same run, against the same server:

* ``/ping`` (a no-op API: the framework's own floor) and ``/score`` at 100, 300 and 600 req/s;
* the capacity: closed-loop throughput of ``/score`` with as many connections as the service's
  concurrency bound (``capacity_connections``);
* ``/score`` at 2x that capacity: goodput (200s per second), shed (503) and answered p99;
* a 10-minute soak at 300 req/s: p99 per minute, RSS of every server process at start and end.

Per phase also: the server's CPU per request sent (``cpu/req``) and the time its threads spent
runnable but waiting for a CPU per request (``rqwait``, from schedstat): on a shared machine the
neighbours' share of the latency. At the end: degraded answers by reason (Redis timeouts under
load show there).

``--quick``: ``/ping`` and ``/score`` at 300 req/s for 20 s each; no capacity, no soak.
``--quick --rates 150,300 --duration-s 30``: other rates and phase lengths (CPU comparisons).
``--phases overload`` (or any of ``rates,overload,soak``): only those phases, e.g. the capacity
and 2x-capacity phases alone; ``--soak-s 180`` a shorter soak.
The last line printed is one JSON object (null where not measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

from benchmarks._bench_model import model_metadata, train
from benchmarks._common import REPO_ROOT, emit, redis_client
from fraud_platform.lib.contracts.events import EVENT_FIELDS, SCORES, TRANSACTIONS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.kafka.admin import ensure_topics
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from tests.serving.conftest import (
    Registered,
    free_port,
    platform_model_store,
    start_server,
    stop_server,
)

GENERATOR = REPO_ROOT / "benchmarks" / "_open_loop.py"
RATES = (100, 300, 600)
PHASES = ("rates", "overload", "soak")
# The capacity closed loop runs as many connections as the service's concurrency bound (its
# setting; 8 when unbounded): every one in progress, none refused for it. With 8 against a bound
# of 4 (2026-12-05, load 13-16) the line was refused 7,331 times in 15 s and each 503 came back
# at once to be sent again: the loop measured its own retries (goodput 204 vs 398 req/s).
UNBOUNDED_CAPACITY_CONNECTIONS = 8


def capacity_connections() -> int:
    from fraud_platform.settings import Settings

    return Settings.from_env().scoring_max_concurrency or UNBOUNDED_CAPACITY_CONNECTIONS


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def request_mix(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` transactions of the last simulated day, as /score bodies (no event_time)."""
    import polars as pl  # noqa: F401  (the simulator's import cost is paid here, not in timing)

    from fraud_platform.lib.simulation import SimulationConfig, simulate

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    simulation = simulate(SimulationConfig(days=2, users=1000, seed=seed, start=start))
    last_day = [t for t in simulation.transactions if t["event_time"] >= start + timedelta(days=1)]
    stride = max(1, len(last_day) // n)
    fields = [f.name for f in EVENT_FIELDS[TRANSACTIONS] if f.name != "event_time"]
    return [{k: t[k] for k in fields if t.get(k) is not None} for t in last_day[::stride][:n]]


def _value(group: FeatureGroup, name: str, feature_time: datetime, i: int) -> Any:
    """Varied but ordinary: no recent password/2FA change, no card-testing burst, so the hard
    rules fire about as rarely as in real traffic and flagged requests stay a few percent."""
    dtype = group.feature(name).dtype
    if dtype == "ts":
        return feature_time - timedelta(days=30 + i % 300)
    if dtype == "int":
        return i % 2
    return float(i % 97)


def write_features(client: Any, mix: list[dict[str, Any]], feature_time: datetime) -> int:
    """A fresh row of every feature group for every entity the mix names."""
    import polars as pl

    written = 0
    for group in FEATURE_GROUPS:
        keys = sorted(
            {
                KEY_SEPARATOR.join(str(t[k]) for k in group.entity.join_keys)
                for t in mix
                if all(t.get(k) is not None for k in group.entity.join_keys)
            }
        )
        rows = [
            {
                ENTITY_KEY: key,
                FEATURE_TIME: feature_time,
                **{name: _value(group, name, feature_time, i) for name in group.feature_names},
            }
            for i, key in enumerate(keys)
        ]
        if rows:
            written += write_snapshot(client, group, pl.DataFrame(rows))
    return written


def realistic_thresholds(
    model: Any, client: Any, mix: list[dict[str, Any]]
) -> tuple[dict[str, float], dict[str, int], int]:
    """Thresholds a fraud team would set: ~2% of the mix reviewed, ~0.3% declined; the
    decisions the mix then gets in process (rules included: every non-approve pays SHAP); and
    how many of the mix's scores differ from ``predict_proba`` on the same model row (the
    service's one-row path must give exactly the batch path's score: 0).

    The synthetic model's own 0.5/0.9 would send ~30% of this mix to review (and through SHAP);
    a payment flow reviews a few percent.
    """
    from fraud_platform.lib.features.request import model_row
    from fraud_platform.lib.model.input import predict_proba
    from fraud_platform.lib.serving.lookup import FeatureLookup
    from fraud_platform.lib.serving.scoring import ScoringModel

    metadata = model_metadata(model)
    lookup = FeatureLookup(client)
    now = datetime.now(UTC)
    txns = [{"counterparty_id": None, **t, "event_time": now} for t in mix]
    looked_up = [lookup.lookup(t).values for t in txns]
    probe = ScoringModel.from_metadata(model, metadata, "fraud_catboost:probe")
    served = [
        probe.score(t, v, explain="never").score for t, v in zip(txns, looked_up, strict=True)
    ]
    batch = predict_proba(
        model,
        [model_row(t, v, probe.service) for t, v in zip(txns, looked_up, strict=True)],
        allow_missing=True,
    )
    mismatches = sum(a != float(b) for a, b in zip(served, batch, strict=True))
    scores = sorted(served)
    thresholds = {
        "review": round(scores[int(len(scores) * 0.98)], 6),
        "decline": round(scores[int(len(scores) * 0.997)], 6),
    }
    final = ScoringModel.from_metadata(
        model, {**metadata, "thresholds": thresholds}, "fraud_catboost:probe"
    )
    decisions: dict[str, int] = {}
    for t, v in zip(txns, looked_up, strict=True):
        decision = final.score(t, v, explain="never").decision
        decisions[decision] = decisions.get(decision, 0) + 1
    return thresholds, decisions, mismatches


def drive(
    url: str,
    bodies: Path,
    *,
    rate: float = 0,
    duration: float,
    closed: int = 0,
    bucket_s: float | None = None,
) -> dict[str, Any]:
    """One run of the generator in its own process; its JSON summary."""
    command = [sys.executable, str(GENERATOR), "--url", url, "--bodies", str(bodies)]
    command += ["--duration", str(duration)]
    command += ["--closed", str(closed)] if closed else ["--rate", str(rate)]
    if bucket_s:
        command += ["--bucket-s", str(bucket_s)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    import ast

    return [
        ast.literal_eval(match)
        for match in re.findall(r"decision log closed: (\{[^}]*\})", server_log)
    ]


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


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A ``redis-server`` of this run only (free port, no persistence): the shared benchmark
    database (6379/9) is flushed by whichever other benchmark starts meanwhile, which left a
    run scoring half its requests without features."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(folder)]
    with (folder / "redis.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis_client(url).close()
                break
            except SystemExit:  # redis_client's "not reachable": not up yet
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {folder}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def run(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], list[str]]:
    with private_redis(tmp / "redis") as redis_url:
        return _run(args, tmp, redis_url)


def _run(args: argparse.Namespace, tmp: Path, redis_url: str) -> tuple[dict[str, Any], list[str]]:
    client = redis_client(redis_url)
    mix = request_mix(2_000)
    written = write_features(client, mix, datetime.now(UTC) - timedelta(minutes=5))
    bodies = tmp / "score.jsonl"
    bodies.write_text("".join(json.dumps(t) + "\n" for t in mix))
    ping = tmp / "ping.jsonl"
    ping.write_text("{}\n")

    model = train(100 if args.quick else 400)
    thresholds, decisions, mismatches = realistic_thresholds(model, client, mix)
    metadata = model_metadata(model, thresholds)
    data_dir = tmp / "platform"
    store = platform_model_store(data_dir)
    tag = store.save_catboost("fraud_catboost", model, metadata=metadata, labels={})
    store.promote(tag)
    registered = Registered(data_dir, data_dir / "bentoml", tag, model, metadata)
    broker = BrokerSpec("noida", free_port(), tmp / "broker")
    start_broker(broker)
    ensure_topics(broker.bootstrap, [SCORES], partitions=2, retention_ms=600_000)
    try:
        server = start_server(registered, redis_url, "load", broker.bootstrap, workers=None)
    except BaseException:
        stop_broker(broker)
        raise
    results: dict[str, Any] = {
        "rate": 300,
        "p50_ms": None,
        "p99_ms": None,
        "ping_p50_ms": None,
        "ping_p99_ms": None,
        "errors": None,
        "shed": None,
        "capacity_rps": None,
        "goodput_at_2x_rps": None,
        "answered_p99_at_2x_ms": None,
        "shed_at_2x": None,
        "soak_rss_growth": None,
        "soak_p99_ms_per_minute": None,
        "trees": int(model.tree_count_),
        "thresholds": thresholds,
        "mix_decisions_in_process": decisions,
        "one_row_vs_batch_score_mismatches": mismatches,
        "mix": len(mix),
        "mix_channels": {
            c: sum(t["channel"] == c for t in mix) for c in {t["channel"] for t in mix}
        },
        "online_keys_written": written,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "server_env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("FRAUD_PLATFORM_SCOR", "BENTOML_CONFIG"))
        },
    }
    table: list[dict[str, Any]] = []
    lines: list[str] = []

    def measured(url: str, body_file: Path, **kwargs: Any) -> dict[str, Any]:
        """``drive`` plus the server's CPU per request sent (robust to a noisy machine: the
        neighbours' load shows in latency, not in our CPU) and the load average after."""
        cpu = server_cpu_s(server.process.pid)
        waited = server_runqueue_wait_s(server.process.pid)
        histogram = server_duration_buckets(server.url)
        figures = drive(url, body_file, **kwargs)
        if url.endswith("/score"):
            histogram_after = server_duration_buckets(server.url)
            for name, q in (("server_p50_ms", 0.5), ("server_p99_ms", 0.99)):
                figures[name] = histogram_quantile_ms(histogram, histogram_after, q)
        used = server_cpu_s(server.process.pid) - cpu
        waited = server_runqueue_wait_s(server.process.pid) - waited
        figures["server_cpu_ms_per_req"] = round(used * 1000 / max(figures["sent"], 1), 3)
        figures["server_runqueue_wait_ms_per_req"] = round(
            waited * 1000 / max(figures["sent"], 1), 3
        )
        figures["loadavg_1m"] = round(os.getloadavg()[0], 2)
        return figures

    try:
        drive(f"{server.url}/score", bodies, rate=50, duration=3)  # warm-up, not reported
        phases = args.phases or (("rates",) if args.quick else PHASES)
        rates = (args.rates or ((300,) if args.quick else RATES)) if "rates" in phases else ()
        duration = args.duration_s
        for rate in rates:
            got_ping = measured(f"{server.url}/ping", ping, rate=rate, duration=duration)
            got = measured(f"{server.url}/score", bodies, rate=rate, duration=duration)
            table += [row("/ping", rate, got_ping), row("/score", rate, got)]
            if rate == 300:
                results.update(
                    p50_ms=got["p50_ms"],
                    p99_ms=got["p99_ms"],
                    ping_p50_ms=got_ping["p50_ms"],
                    ping_p99_ms=got_ping["p99_ms"],
                    p50_from_send_ms=got["p50_from_send_ms"],
                    ping_p50_from_send_ms=got_ping["p50_from_send_ms"],
                    errors=got["errors"],
                    shed=got["shed"],
                    server_cpu_ms_per_req=got["server_cpu_ms_per_req"],
                    ping_server_cpu_ms_per_req=got_ping["server_cpu_ms_per_req"],
                )
        if "overload" in phases:
            connections = capacity_connections()
            capacity = measured(f"{server.url}/score", bodies, closed=connections, duration=15)
            results["capacity_rps"] = capacity["goodput_rps"]
            results["capacity_shed"] = capacity["shed"]
            table.append(row(f"/score closed x{connections}", "max", capacity))
            over = args.overload_rps or round(2 * capacity["goodput_rps"])
            got = measured(f"{server.url}/score", bodies, rate=over, duration=duration)
            table.append(row("/score", over, got))
            results.update(
                goodput_at_2x_rps=got["goodput_rps"],
                answered_p99_at_2x_ms=got["p99_ms"],
                shed_at_2x=got["shed"],
                errors_at_2x=got["errors"],
                send_lag_p99_at_2x_ms=got["send_lag_p99_ms"],
                answered_p99_from_send_at_2x_ms=got["p99_from_send_ms"],
            )
        if "soak" in phases:
            rss_start = server_rss_mb(server.process.pid)
            soak = measured(
                f"{server.url}/score", bodies, rate=300, duration=args.soak_s, bucket_s=60
            )
            rss_end = server_rss_mb(server.process.pid)
            table.append(row("/score soak", 300, soak))
            total_start, total_end = sum(rss_start.values()), sum(rss_end.values())
            results.update(
                soak_p99_ms_per_minute=soak["p99_ms_per_bucket"],
                soak_errors=soak["errors"],
                soak_rss_mb_start=rss_start,
                soak_rss_mb_end=rss_end,
                soak_rss_growth=round(total_end / total_start - 1, 4) if total_start else None,
            )
        results["degraded_answers"] = degraded_answers(server.url)
    finally:
        stop_server(server)
        stop_broker(broker)
        client.close()
    results["decision_log_per_worker"] = decision_log_stats(server.log_tail(1_000_000))
    if results["p50_ms"] and results["ping_p50_ms"]:
        results["score_over_ping_p50"] = round(results["p50_ms"] / results["ping_p50_ms"], 2)
    if results.get("p50_from_send_ms") and results.get("ping_p50_from_send_ms"):
        results["score_over_ping_p50_from_send"] = round(
            results["p50_from_send_ms"] / results["ping_p50_from_send_ms"], 2
        )
    lines.append(
        f"{'endpoint':24s} {'rate':>6s} {'sent':>7s} {'ok':>7s} {'shed':>6s} {'err':>6s} "
        f"{'goodput':>8s} {'p50':>8s} {'p99':>8s} {'p99.9':>8s} {'lag99':>7s} {'cpu/req':>7s} "
        f"{'rqwait':>7s} {'load':>5s} {'srv99':>6s} {'sent99':>7s} {'gen/req':>7s}"
    )
    for r in table:
        lines.append(
            f"{r['endpoint']:24s} {r['rate']!s:>6s} {r['sent']:>7} {r['ok']:>7} {r['shed']:>6} "
            f"{r['errors']:>6} {r['goodput_rps']!s:>8s} {r['p50_ms']!s:>8s} {r['p99_ms']!s:>8s} "
            f"{r['p999_ms']!s:>8s} {r['send_lag_p99_ms']!s:>7s} "
            f"{r['server_cpu_ms_per_req']!s:>7s} {r['server_runqueue_wait_ms_per_req']!s:>7s} "
            f"{r['loadavg_1m']!s:>5s} {r['server_p99_ms_bucket']!s:>6s} "
            f"{r['p99_from_send_ms']!s:>7s} {r['generator_cpu_ms_per_req']!s:>7s}"
        )
    results["table"] = table
    return results, lines


def _bad_phase(name: str) -> bool:
    raise argparse.ArgumentTypeError(f"unknown phase {name!r}: choose from {PHASES}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument(
        "--rates",
        type=lambda text: tuple(int(r) for r in text.split(",")),
        help="comma-separated rates for the /ping and /score phases (default: 100,300,600; "
        "--quick: 300); the JSON's figures are those at 300 req/s",
    )
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per rate")
    parser.add_argument(
        "--phases",
        type=lambda text: tuple(p for p in text.split(",") if p in PHASES or _bad_phase(p)),
        help=f"comma-separated phases to run, of {','.join(PHASES)} (default: all; --quick: "
        "rates); e.g. --phases overload for the capacity and 2x-capacity phases only",
    )
    parser.add_argument(
        "--overload-rps",
        type=int,
        help="offered rate of the overload phase (default: twice the measured capacity); a "
        "fixed rate compares two builds on a machine whose capacity varies",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results, lines = run(args, Path(tmp))
    results["wall_s"] = round(time.perf_counter() - started, 1)
    emit(results, lines)


if __name__ == "__main__":
    main()
