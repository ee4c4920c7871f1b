"""The scoring service under open-loop load (not collected by pytest).

    .venv/bin/python benchmarks/serving_load.py [--quick]

Starts a real ``bentoml serve`` of ``models_bento.service:FraudScorer`` (workers, concurrency
limit and access log as its settings say; see ``fraud_platform.settings``) on a 400-tree
depth-6 CatBoost (``--quick``: 100 trees) registered in a temporary model store, with online
features in a private ``redis-server`` of the run for every entity of the request mix, and its
decision log produced to an embedded broker (so decisions are delivered, as in production, rather
than piling up for a Kafka that is not there): tansu, memory-only (``--broker noida``: noida).
Not noida by default: its ``autosave`` thread rewrites the whole Kafka state to one JSON file
over and over, so its CPU grows with the records it holds; in a 10-minute soak at 300 req/s
(2026-12-06) it took ~0.2 of a core in the first minute and 0.5-0.7 from the second on (the file
1.2 GB by minute 7, RSS up to 2.4 GB), on the 2 cores the server and the generator share: a
test broker's cost that a production Kafka on its own machines does not put on the service.
tansu used ~0.02 of a core throughout (its RSS grows by the records it holds, ~70 MB a minute).
The mix is one simulated day (``fraud_platform.lib.simulation``: its channels, amounts, p2p
counterparties), sent without ``event_time`` (scored as of now). Before serving, the mix is scored in process
(thresholds) and ``one_row_vs_batch_score_mismatches`` counts scores of the service's one-row
path that differ from ``predict_proba`` on the same rows (0: bit-identical).

Load comes from ``benchmarks/_open_loop.py`` in its own process, at niceness -10 (when
permitted: scheduled ahead of the server on the shared cores; its own CPU per request is
reported as ``gen/req``): requests at fixed scheduled times, latency from the schedule. Each
server first answers the whole mix once, unreported (a combination of categorical values the
leaf indexer has not seen costs a CatBoost call: without it the first ~2,000 requests measured
a colder server than the rest). In the same run, against the same server:

* ``/ping`` (a no-op API: the framework's own floor) and ``/score`` at 100, 300 and 600 req/s,
  in ``--rounds`` (5) alternating rounds of each (``benchmarks/_rounds.py``): p50 over all
  rounds, and ``p50_ratio_score_over_ping``, the median of the rounds' ratios (at 300 req/s;
  ``p50_ratio_by_rate`` at each);
* the capacity (``capacity_rps``): the highest open-loop rate of ``/score`` the server sustains
  within budget: answered p99 <= 50 ms, shed + errors <= 0.5% of sent, goodput >= 99% of the
  offered rate; found by ``benchmarks/_capacity_search.py`` (x1.5 steps from 400 req/s until one
  fails, then bisection to 5%; ``--capacity-step-s`` seconds a step, 8 by default; at most 11
  steps), each step in ``capacity_search`` and in the table (``/score search pass|fail``);
* ``/score`` at 2x that rate: goodput (200s per second; ``goodput_at_2x_over_capacity`` is it
  over ``capacity_rps``), shed (503) and answered p99;
* a 10-minute soak at 300 req/s: p99 per minute, RSS of every server process at start and end
  (``soak_rss_growth``: their total, end over start; this tree's server only, not the baseline's)
  and the cores used per minute by the server, the broker and the whole machine
  (``soak_cores_per_minute``, ``benchmarks/_soak.py``).

Per phase also: the server's CPU per request sent (``cpu/req``) and the time its threads spent
runnable but waiting for a CPU per request (``rqwait``, from schedstat): on a shared machine the
neighbours' share of the latency. At the end: degraded answers by reason (Redis timeouts under
load show there).

``--quick``: ``/ping`` and ``/score`` at 300 req/s for 20 s each (5 rounds of 4 s); no capacity,
no soak.
``--quick --rates 150,300 --duration-s 30``: other rates and phase lengths (CPU comparisons).
``--phases overload`` (or any of ``rates,overload,soak``): only those phases, e.g. the capacity
and 2x-capacity phases alone; ``--soak-s 180`` a shorter soak.
``--baseline-src DIR`` (e.g. ``git archive main | tar -x -C DIR``) and/or ``--baseline-env
KEY=VALUE``: a second server (that tree's code, those settings) next to this one, with the same
model, features and broker; every phase runs against this tree's server and then the
baseline's, so two builds are compared minutes apart on the same machine (``baseline`` in the
JSON, rows prefixed ``baseline`` in the table).
``ok_per_cpu_at_2x_over_capacity``: 200s per server CPU second at 2x over the same at capacity;
unlike ``goodput_at_2x_over_capacity`` it does not move with the neighbours' share of the cores.
The last line printed is one JSON object (null where not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

from benchmarks._bench_model import model_metadata, train
from benchmarks._capacity_search import search_capacity
from benchmarks._common import REPO_ROOT, emit, redis_client
from benchmarks._drive import drive, measured, ok_per_cpu_s
from benchmarks._load_table import row, table_lines
from benchmarks._rounds import alternating_rounds
from benchmarks._server_stats import decision_log_stats, degraded_answers
from benchmarks._serving_setup import (
    private_redis,
    realistic_thresholds,
    request_mix,
    write_features,
)
from benchmarks._soak import soak_phase
from fraud_platform.lib.contracts.events import SCORES
from fraud_platform.lib.kafka.admin import ensure_topics
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from tests.serving.conftest import (
    Registered,
    Server,
    free_port,
    platform_model_store,
    start_server,
    stop_server,
)

RATES = (100, 300, 600)
SOAK_RPS = 300
WARM_UP_RPS = 250
PHASES = ("rates", "overload", "soak")
CAPACITY_STEP_S = 8.0  # seconds per step of the capacity search (``_capacity_search``)
CAPACITY_START_RPS = 400
SETTLE_S = 1.0  # between two search steps: the last step's stragglers and its CPU settle


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
    broker = BrokerSpec(args.broker, free_port(), tmp / "broker")
    broker_pid = start_broker(broker)
    ensure_topics(broker.bootstrap, [SCORES], partitions=2, retention_ms=600_000)
    servers: list[tuple[str, Server]] = []
    try:
        servers.append(
            ("", start_server(registered, redis_url, "load", broker.bootstrap, workers=None))
        )
        if args.baseline_src or args.baseline_env:
            baseline = start_server(
                registered,
                redis_url,
                "baseline",
                broker.bootstrap,
                # its own BentoML home: BentoML empties the Prometheus directory in it at
                # start, which would take the other server's metrics away (the model store
                # stays the platform's, FRAUD_PLATFORM_DATA_DIR)
                extra_env={"BENTOML_HOME": str(tmp / "baseline-bentoml")}
                | dict(args.baseline_env or ()),
                workers=None,
                src=args.baseline_src,
            )
            servers.append(("baseline", baseline))
    except BaseException:
        for _, server in servers:
            stop_server(server)
        stop_broker(broker)
        raise
    common: dict[str, Any] = {
        "trees": int(model.tree_count_),
        "thresholds": thresholds,
        "mix_decisions_in_process": decisions,
        "one_row_vs_batch_score_mismatches": mismatches,
        "mix": len(mix),
        "mix_channels": {
            c: sum(t["channel"] == c for t in mix) for c in {t["channel"] for t in mix}
        },
        "online_keys_written": written,
        "broker": args.broker,
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
        "server_env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("FRAUD_PLATFORM_SCOR", "BENTOML_CONFIG"))
        },
    }
    if len(servers) > 1:
        common["baseline_src"] = str(args.baseline_src or REPO_ROOT)
        common["baseline_env"] = dict(args.baseline_env or ())
    figures = {label: empty_results() for label, _ in servers}
    table: list[dict[str, Any]] = []
    try:
        for _, server in servers:
            # warm-up, not reported: the whole mix once, so every combination of categorical
            # values has been seen (the first costs a CatBoost call: leaf_index.LeafIndexer)
            drive(f"{server.url}/score", bodies, rate=WARM_UP_RPS, duration=len(mix) / WARM_UP_RPS)
        run_phases(args, servers, bodies, ping, figures, table, tmp, broker_pid)
        for label, server in servers:
            figures[label]["degraded_answers"] = degraded_answers(server.url)
    finally:
        for _, server in servers:
            stop_server(server)
        stop_broker(broker)
        client.close()
    for label, server in servers:
        results = figures[label]
        results["decision_log_per_worker"] = decision_log_stats(server.log_tail(1_000_000))
        if results["p50_ms"] and results["ping_p50_ms"]:
            results["score_over_ping_p50"] = round(results["p50_ms"] / results["ping_p50_ms"], 2)
        if results.get("p50_from_send_ms") and results.get("ping_p50_from_send_ms"):
            results["score_over_ping_p50_from_send"] = round(
                results["p50_from_send_ms"] / results["ping_p50_from_send_ms"], 2
            )
        if results["capacity_rps"] and results["goodput_at_2x_rps"] is not None:
            results["goodput_at_2x_over_capacity"] = round(
                results["goodput_at_2x_rps"] / results["capacity_rps"], 3
            )
            if results["capacity_ok_per_server_cpu_s"] and results["ok_per_server_cpu_s_at_2x"]:
                results["ok_per_cpu_at_2x_over_capacity"] = round(
                    results["ok_per_server_cpu_s_at_2x"] / results["capacity_ok_per_server_cpu_s"],
                    3,
                )
    results = {**figures[""], **common, "table": table}
    if "baseline" in figures:
        results["baseline"] = figures["baseline"]
    return results, table_lines(table)


def empty_results() -> dict[str, Any]:
    keys = ("p50_ms", "p99_ms", "ping_p50_ms", "ping_p99_ms", "errors", "shed", "capacity_rps")
    keys += ("goodput_at_2x_rps", "answered_p99_at_2x_ms", "shed_at_2x", "soak_rss_growth")
    keys += ("p50_ratio_score_over_ping",)
    return {"rate": 300, **dict.fromkeys(keys), "soak_p99_ms_per_minute": None}


def run_phases(
    args: argparse.Namespace,
    servers: list[tuple[str, Server]],
    bodies: Path,
    ping: Path,
    figures: dict[str, dict[str, Any]],
    table: list[dict[str, Any]],
    tmp: Path,
    broker_pid: int | None = None,
) -> None:
    """Each phase against every server in turn (this tree's, then the baseline's): two builds
    compared on the same machine minutes apart at most, not across runs."""
    phases = args.phases or (("rates",) if args.quick else PHASES)
    rates = (args.rates or ((300,) if args.quick else RATES)) if "rates" in phases else ()
    duration = args.duration_s
    step_s = args.capacity_step_s

    def name(label: str, endpoint: str) -> str:
        return f"{label} {endpoint}".strip()

    def one_round(server: Server, endpoint: str, rate: float, seconds: float, out: Path) -> Any:
        body_file = ping if endpoint == "/ping" else bodies
        url = f"{server.url}{endpoint}"
        return measured(server, url, body_file, rate=rate, duration=seconds, latencies_out=out)

    for rate in rates:
        rounds = alternating_rounds(servers, one_round, rate, duration, args.rounds, tmp)
        for label, _ in servers:
            got_ping, got = rounds[label]["/ping"], rounds[label]["/score"]
            ratio = rounds[label]["p50_ratio_score_over_ping"]
            figures[label].setdefault("p50_ratio_by_rate", {})[rate] = ratio
            table += [
                row(name(label, "/ping"), rate, got_ping),
                row(name(label, "/score"), rate, got),
            ]
            if rate == 300:
                figures[label].update(
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
                    p50_ratio_score_over_ping=ratio,
                    p50_ratios=rounds[label]["p50_ratios"],
                    ping_round_p50_ms=got_ping["round_p50_ms"],
                    score_round_p50_ms=got["round_p50_ms"],
                )
    if "overload" in phases:
        capacities = {}
        for label, server in servers:

            def probe(rate: int, server: Server = server) -> dict[str, Any]:
                time.sleep(SETTLE_S)
                got = measured(server, f"{server.url}/score", bodies, rate=rate, duration=step_s)
                return got | {"ok_per_server_cpu_s": ok_per_cpu_s(got)}

            capacity, trace = search_capacity(probe, start=CAPACITY_START_RPS)
            capacities[label] = capacity or CAPACITY_START_RPS
            at_capacity = [t for t in trace if t["rate"] == capacity]
            figures[label].update(
                capacity_rps=capacity,
                capacity_search=trace,
                capacity_ok_per_server_cpu_s=at_capacity[-1]["ok_per_server_cpu_s"]
                if at_capacity
                else None,
            )
            for step in trace:
                verdict = "pass" if step["passed"] else "fail"
                table.append(
                    row(name(label, f"/score search {verdict}"), step["rate"], step.pop("figures"))
                )
        for label, server in servers:
            over = args.overload_rps or round(2 * capacities[label])
            got = measured(server, f"{server.url}/score", bodies, rate=over, duration=duration)
            table.append(row(name(label, "/score"), over, got))
            figures[label].update(
                goodput_at_2x_rps=got["goodput_rps"],
                answered_p99_at_2x_ms=got["p99_ms"],
                shed_at_2x=got["shed"],
                server_shed_at_2x=got["server_shed"],
                ok_per_server_cpu_s_at_2x=ok_per_cpu_s(got),
                errors_at_2x=got["errors"],
                server_cpu_ms_per_req_at_2x=got["server_cpu_ms_per_req"],
                send_lag_p99_at_2x_ms=got["send_lag_p99_ms"],
                answered_p99_from_send_at_2x_ms=got["p99_from_send_ms"],
            )
    if "soak" in phases:
        for label, server in servers[:1]:  # this tree's server only: 10 minutes each
            soak = soak_phase(server, bodies, rate=SOAK_RPS, seconds=args.soak_s, broker=broker_pid)
            table.append(row(name(label, "/score soak"), SOAK_RPS, soak.pop("figures")))
            figures[label].update(soak)


def _bad_phase(name: str) -> bool:
    raise argparse.ArgumentTypeError(f"unknown phase {name!r}: choose from {PHASES}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--soak-s", type=float, default=600.0)
    parser.add_argument(
        "--broker",
        choices=("tansu", "noida"),
        default="tansu",
        help="the embedded broker the decision log produces to (module docstring: why not "
        "noida by default)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="another source tree (e.g. `git archive main | tar -x -C DIR`) served next to this "
        "one with the same model, features and settings; every phase runs against both in turn",
    )
    parser.add_argument(
        "--baseline-env",
        action="append",
        type=lambda text: tuple(text.split("=", 1)),
        help="KEY=VALUE for the baseline server only (repeatable; without --baseline-src the "
        "baseline is this tree with these settings)",
    )
    parser.add_argument(
        "--rates",
        type=lambda text: tuple(int(r) for r in text.split(",")),
        help="comma-separated rates for the /ping and /score phases (default: 100,300,600; "
        "--quick: 300); the JSON's figures are those at 300 req/s",
    )
    parser.add_argument(
        "--duration-s", type=float, default=20.0, help="seconds per rate and endpoint"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating /ping and /score rounds per rate"
    )
    parser.add_argument(
        "--capacity-step-s",
        type=float,
        default=CAPACITY_STEP_S,
        help="seconds per step of the open-loop capacity search",
    )
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
