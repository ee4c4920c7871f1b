"""Latency of the scoring path, in process and over HTTP (not collected by pytest).

    .venv/bin/python benchmarks/scoring.py [--quick]

In process (real Redis on 127.0.0.1:6379): Redis lookup, ``ScoringModel.score`` (model row,
prediction, rules, SHAP when flagged), decision-log append (encode + hand to librdkafka, an
embedded noida broker started here); each and all together, p50/p99.
Over HTTP: a real ``bentoml serve`` (one worker), sequential keep-alive requests to the built-in
``/livez``, the no-op API ``/ping`` and ``/score``, same run, same client.

The model is a 400-tree depth-6 CatBoost on synthetic rows (``--quick``: 100 trees) with
exactly FRAUD_SCORING_V1's features. The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests' fixtures


from benchmarks._bench_model import bench_model, quick_arg
from fraud_platform.lib.contracts.events import TRANSACTIONS, encode_event, validate_record
from fraud_platform.lib.model.explain import top_reasons
from fraud_platform.lib.serving.decision_log import DecisionLog
from fraud_platform.lib.serving.lookup import FeatureLookup
from fraud_platform.lib.serving.scoring import ScoringModel, decision_event
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from tests.serving.conftest import (
    REDIS_URL,
    Registered,
    free_port,
    platform_model_store,
    start_server,
    stop_server,
    write_customer,
)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": round(statistics.median(ordered), 4),
        "p99": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 4),
    }


def timed(fn: Callable[[], Any], n: int, warm: int = 50) -> dict[str, float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return percentiles(out)


def main() -> None:
    quick = quick_arg()
    n = 300 if quick else 2_000
    model, metadata = bench_model(quick)
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.05, socket_connect_timeout=0.05)
    customer = write_customer(client, datetime.now(UTC) - timedelta(minutes=5))
    body = customer.transaction()
    txn = validate_record(
        TRANSACTIONS, {"schema_version": 1, **body, "event_time": datetime.now(UTC).isoformat()}
    )
    flagged_txn = {**txn, "amount": 900.0, "channel": "p2p", "counterparty_id": "u-x"}
    scoring = ScoringModel.from_metadata(model, metadata, "fraud_catboost:bench")
    lookup = FeatureLookup(client)
    results: dict[str, Any] = {"trees": int(model.tree_count_), "n": n}

    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerSpec("noida", free_port(), Path(tmp) / "broker")
        Path(broker.data_dir).mkdir()
        start_broker(broker)
        try:
            log = DecisionLog(broker.bootstrap)
            found = lookup.lookup(txn)
            assert not found.degraded, found.degraded_reason

            def event_of(t: dict[str, Any], result: Any, got: Any) -> dict[str, Any]:
                return decision_event(
                    request_id="b",
                    scored_at=datetime.now(UTC),
                    txn=t,
                    result=result,
                    lookup=got,
                    feature_service=scoring.service.name,
                )

            def full(t: dict[str, Any] = txn) -> None:
                got = lookup.lookup(t)
                result = scoring.score(t, got.values, degraded=got.degraded)
                log.append(event_of(t, result, got))

            flagged = scoring.score(flagged_txn, found.values)
            event = event_of(flagged_txn, flagged, found)  # a flagged decision: with its reasons
            results["log_event_bytes"] = len(encode_event(event))
            results["in_process_ms"] = {
                "redis_lookup": timed(lambda: lookup.lookup(txn), n),
                "score_approve_no_shap": timed(lambda: scoring.score(txn, found.values), n),
                "score_flagged_shap_approx": timed(
                    lambda: scoring.score(flagged_txn, found.values), n
                ),
                "score_shap_regular": timed(
                    lambda: top_reasons(model, scoring._row(txn, found.values)), n // 4
                ),
                "log_encode": timed(lambda: encode_event(event), n),
                "log_append": timed(lambda: log.append(event), n),
                "total_approve": timed(full, n),
                "total_flagged": timed(lambda: full(flagged_txn), n),
            }
            results["flagged_decision"] = flagged.decision

            log.close()

            # over HTTP
            data_dir = Path(tmp) / "platform"
            store = platform_model_store(data_dir)
            tag = store.save_catboost("fraud_catboost", model, metadata=metadata, labels={})
            store.promote(tag)
            registered = Registered(data_dir, data_dir / "bentoml", tag, model, metadata)
            started = time.perf_counter()
            server = start_server(registered, REDIS_URL, "bench", broker.bootstrap)
            results["server_ready_s"] = round(time.perf_counter() - started, 2)
            try:
                http: dict[str, Any] = {}
                with httpx.Client(base_url=server.url, timeout=10) as h:
                    calls = {
                        "/livez": lambda: h.get("/livez"),
                        "/ping": lambda: h.post("/ping", json={}),
                        "/score": lambda: h.post("/score", json=body),
                        "/score_flagged": lambda: h.post(
                            "/score",
                            json={
                                **body,
                                "amount": 900.0,
                                "channel": "p2p",
                                "counterparty_id": "u",
                            },
                        ),
                    }
                    for name, call in calls.items():
                        http[name] = timed(call, n)
                    for name, call in calls.items():  # again: drift between rounds
                        http[name + "_round2"] = timed(call, n, warm=0)
                results["http_ms"] = http
            finally:
                stop_server(server)
        finally:
            stop_broker(broker)
    for key, value in results.items():
        print(f"{key}: {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
