"""Ingestion worker run as a subprocess by ``test_exactly_once.py`` (so it can be SIGKILLed).

Usage: ``python ingest_worker.py <bootstrap> <topic> <delta_root> [--once] [--go-file PATH]
[--max-events N]``

Prints one line per step, flushed at once, so the test can tell where a kill landed:
``ready`` (imports done), ``begin`` (an ``ingest_topic`` call starts), ``end {json}`` (it
returned), ``error {json}`` (it raised; with ``--once`` the worker then exits with status 1).
Without ``--once`` it ingests in a loop until killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fraud_platform.lib.contracts.events import TRANSACTIONS
from fraud_platform.lib.ingestion.bronze import ingest_topic
from fraud_platform.lib.storage.delta import DeltaStore


def emit(kind: str, payload: dict[str, object] | None = None) -> None:
    line = kind if payload is None else f"{kind} {json.dumps(payload, sort_keys=True)}"
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("delta_root")
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--go-file", type=Path)
    parser.add_argument("--max-events", type=int, default=50)
    args = parser.parse_args()
    emit("ready")
    if args.go_file is not None:
        while not args.go_file.exists():
            time.sleep(0.005)
    while True:
        emit("begin")
        try:
            result = ingest_topic(
                args.topic,
                bootstrap=args.bootstrap,
                store=DeltaStore(args.delta_root),
                max_events=args.max_events,
                poll_timeout_s=0.5,
                group_id="exactly_once_test",
                contract=TRANSACTIONS,
            )
        except Exception as exc:
            emit("error", {"type": type(exc).__qualname__, "module": type(exc).__module__,
                           "message": str(exc)})  # fmt: skip
            if args.once:
                return 1
            time.sleep(0.1)
            continue
        emit(
            "end",
            {
                "version": result.delta_version,
                "accepted": result.accepted,
                "elapsed_s": round(result.elapsed_s, 3),
                "rejected": result.rejected,
                "before": result.offsets_before,
                "after": result.offsets_after,
            },
        )
        if args.once:
            return 0
        if result.read == 0:
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
