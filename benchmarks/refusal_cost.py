"""Server CPU of one 503 refusal past capacity (not collected by pytest).

    .venv/bin/python benchmarks/refusal_cost.py [--quick] [--rate 2000] [--duration 10]
        [--rounds 2] [--baseline-src DIR]

``--quick``: 1,000 req/s for 3 s, one round.

A uvicorn worker as BentoML runs it (uvloop, httptools) serving a Starlette application behind
``FrontDoor`` with a bound of 0: every ``POST /score`` is refused at once (503 ``overload``),
so the server's CPU per request sent (user + system, from /proc) is the cost of a refusal.
Two servers take turns, ``--rounds`` times, under the same open-loop generator
(``_open_loop.py``): uvicorn's own protocol with this tree's code (the shedder refuses in the
ASGI application, as on main) and ``early_refusal.EarlyRefusalProtocol`` (the HTTP protocol
refuses). ``--baseline-src``: the uvicorn-protocol server runs that tree's code instead (e.g.
``git archive main | tar -x -C DIR``). What a refusal costs sets the goodput at twice capacity:
about (1 - 2r) / (1 - r) of capacity, r the refusal's CPU over a scored request's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

from benchmarks._common import REPO_ROOT, emit, free_port
from benchmarks._server_stats import server_cpu_s

GENERATOR = REPO_ROOT / "benchmarks" / "_open_loop.py"


def serve(port: int, early: bool) -> None:
    """The server (run in its own process by ``measure``, in the tree it serves)."""
    sys.path.insert(0, os.getcwd())  # that tree's models_bento, not this file's
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware

    from models_bento.shedding import FrontDoor

    options = {"limit": 0, "paths": ["/score"], "max_wait_s": 0}
    app = Starlette(middleware=[Middleware(FrontDoor, **options)])
    if early:
        from models_bento import early_refusal

        if not early_refusal.install():
            raise SystemExit("EarlyRefusalProtocol could not be installed")
    config = uvicorn.Config(app, port=port, log_config=None, server_header=False, loop="uvloop")
    uvicorn.Server(config).run()


def measure(early: bool, src: Path, body: Path, rate: float, duration: float) -> dict:
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port)] + (["--early"] if early else [])
    server = subprocess.Popen(
        command,
        cwd=src,
        env={**os.environ, "PYTHONPATH": str(src)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # started (nothing to load)
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        cpu = server_cpu_s(server.pid)
        command = [sys.executable, str(GENERATOR), "--url", f"http://127.0.0.1:{port}/score"]
        command += ["--bodies", str(body), "--rate", str(rate), "--duration", str(duration)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        used = server_cpu_s(server.pid) - cpu
        got = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(10)
    return {
        "protocol": "early_refusal" if early else "uvicorn",
        "src": str(src),
        "sent": got["sent"],
        "shed": got["shed"],
        "errors": got["errors"],
        "server_cpu_us_per_refusal": round(used * 1e6 / max(got["sent"], 1), 1),
        "generator_cpu_ms_per_req": got.get("cpu_ms_per_req"),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--baseline-src", type=Path, default=REPO_ROOT)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--early", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.early)
        return
    args.rate = args.rate or (1000.0 if args.quick else 2000.0)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        body = Path(tmp) / "body.jsonl"
        body.write_text('{"transaction_id": "t-1"}\n')
        for _ in range(args.rounds):
            rows.append(measure(False, args.baseline_src, body, args.rate, args.duration))
            rows.append(measure(True, REPO_ROOT, body, args.rate, args.duration))

    def mean(protocol: str) -> float:
        costs = [r["server_cpu_us_per_refusal"] for r in rows if r["protocol"] == protocol]
        return round(sum(costs) / len(costs), 1)

    results = {
        "rate": args.rate,
        "uvicorn_us_per_refusal": mean("uvicorn"),
        "early_refusal_us_per_refusal": mean("early_refusal"),
        "rows": rows,
    }
    lines = [
        f"{r['protocol']:14s} {r['server_cpu_us_per_refusal']:7.1f} us/refusal  sent {r['sent']} "
        f"shed {r['shed']} errors {r['errors']} load {r['loadavg_1m']}"
        for r in rows
    ]
    emit(results, lines)


if __name__ == "__main__":
    main()
