"""Per-request cost of the operator metrics, in process (not collected by pytest).

    .venv/bin/python benchmarks/serving_metrics.py [--quick]

prometheus_client runs in multi-process mode (a temporary ``PROMETHEUS_MULTIPROC_DIR``, as
under ``bentoml serve``: every update is an mmap write). Measured:

- ``record_only``: exactly the metric calls one /score makes (model info check, Redis lookup
  histogram, decision counter, one feature-age observation per group, five stage histograms);
- ``request``: a Redis lookup + ``ScoringModel.score`` + the same recording as the service
  (real Redis on 127.0.0.1:6379), with the metrics on and with them replaced by no-ops,
  alternating call by call so that drift and load hit both alike.

The last line printed is one JSON object.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-bench-")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: tests' fixtures

import redis  # noqa: E402

from benchmarks._bench_model import bench_model, quick_arg  # noqa: E402
from fraud_platform.lib.contracts.events import TRANSACTIONS, validate_record  # noqa: E402
from fraud_platform.lib.serving import metrics as serving_metrics  # noqa: E402
from fraud_platform.lib.serving.lookup import FeatureLookup  # noqa: E402
from fraud_platform.lib.serving.scoring import ScoringModel  # noqa: E402
from tests.serving.conftest import (  # noqa: E402
    REDIS_URL,
    delete_customer,
    write_customer,
)


class _Off:
    """The metrics, switched off: every method a no-op."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def per_call_us(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1e6)
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(ordered), 2),
        "p50": round(statistics.median(ordered), 2),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1], 2),
    }


def main() -> None:
    quick = quick_arg()
    n = 2_000 if quick else 20_000
    model, metadata = bench_model(quick)
    scoring = ScoringModel.from_metadata(model, metadata, "fraud_catboost:bench")
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.05, socket_connect_timeout=0.05)
    customer = write_customer(client, datetime.now(UTC) - timedelta(minutes=5))
    try:
        txn = validate_record(
            TRANSACTIONS,
            {
                "schema_version": 1,
                **customer.transaction(),
                "event_time": datetime.now(UTC).isoformat(),
            },
        )
        lookup = FeatureLookup(client)
        found = lookup.lookup(txn)
        assert not found.degraded, found.degraded_reason
        result = scoring.score(txn, found.values)
        m = serving_metrics.metrics()

        def record_only() -> None:  # the service's calls, lookup.py's included
            m.model_in_service(scoring.tag, scoring.service.name, True)
            m.lookup(0.0003)
            serving_metrics.record_scored(
                decision=result.decision,
                channel=txn["channel"],
                degraded=False,
                feature_ages=found.age_seconds,
                stage_seconds={"lookup": 0.0003, **result.stage_seconds, "total": 0.001},
            )

        def request() -> None:  # what the /score handler does, minus HTTP and the log
            started = time.perf_counter()
            serving_metrics.metrics().model_in_service(scoring.tag, scoring.service.name, True)
            got = lookup.lookup(txn)
            lookup_s = time.perf_counter() - started
            scored = scoring.score(txn, got.values, degraded=got.degraded)
            serving_metrics.record_request(
                channel=txn["channel"], found=got, result=scored, lookup_s=lookup_s, started=started
            )

        per_call_us(record_only, 500)  # warm-up
        recorded = per_call_us(record_only, n)
        on: list[float] = []
        off: list[float] = []
        off_metrics = _Off()
        for i in range(2 * n // 10):  # alternate call by call: drift and load hit both alike
            serving_metrics._metrics = off_metrics if i % 2 else m  # type: ignore[assignment]
            started = time.perf_counter()
            request()
            (off if i % 2 else on).append((time.perf_counter() - started) * 1e6)
        serving_metrics._metrics = m
        results = {
            "multiprocess_mode": True,
            "trees": int(model.tree_count_),
            "groups_with_age": sum(age is not None for age in found.age_seconds.values()),
            "record_only_us": summary(recorded),
            "request_with_metrics_us": summary(on),
            "request_without_metrics_us": summary(off),
        }
        results["overhead_us_p50"] = round(
            results["request_with_metrics_us"]["p50"]
            - results["request_without_metrics_us"]["p50"],
            2,
        )
        print(json.dumps(results))
    finally:
        delete_customer(client, customer)
        client.close()


if __name__ == "__main__":
    main()
