"""Operator metrics on /metrics of a real ``bentoml serve``: two workers (the exposition sums
what both wrote), counters and histograms move with the right bounded labels."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fraud_platform.lib.features.services import FRAUD_SCORING_V1

from .conftest import (
    READY_DEADLINE_S,
    REDIS_URL,
    Customer,
    Registered,
    Server,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.serving

WORKERS = 2
RSS = "fraud_scorer_worker_resident_memory_bytes"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server) -> Samples:
    response = httpx.get(f"{server.url}/metrics", timeout=10.0)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"series repeated in the exposition: {key}"
            samples[key] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over series of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls), _ in samples.items() if n == name and label in dict(ls)}


@pytest.fixture(scope="module")
def multi_worker_scorer(registered_model: Registered, customer: Customer) -> Iterator[Server]:
    server = start_server(
        registered_model,
        REDIS_URL,
        "metrics",
        workers=WORKERS,
    )
    deadline = time.monotonic() + READY_DEADLINE_S  # /readyz answers once one worker is up
    while len(label_values(scrape(server), RSS, "worker")) < WORKERS:
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(f"not all {WORKERS} workers up; log:\n{server.log_tail()}")
        time.sleep(0.2)
    yield server
    stop_server(server)


def test_scoring_moves_counters_and_histograms(
    multi_worker_scorer: Server, customer: Customer, registered_model: Registered
):
    before = scrape(multi_worker_scorer)
    approved = customer.transaction(amount=12.0, channel="ecommerce")
    flagged = customer.transaction(amount=900.0, channel="p2p", counterparty_id="u-other")
    answers = []
    with httpx.Client(base_url=multi_worker_scorer.url, timeout=10.0) as client:
        for _ in range(3):  # enough requests that both workers likely serve some
            for body in (approved, flagged):
                response = client.post("/score", json=body)
                assert response.status_code == 200, response.text
                answers.append(response.json())
    after = scrape(multi_worker_scorer)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    by_outcome: dict[tuple[str, str], int] = {}
    for body, answer in zip([approved, flagged] * 3, answers, strict=True):
        assert answer["degraded"] is False, answer["degraded_reason"]
        key = (answer["decision"], body["channel"])
        by_outcome[key] = by_outcome.get(key, 0) + 1
    assert ("approve", "ecommerce") in by_outcome
    assert any(decision != "approve" for decision, _ in by_outcome)
    for (decision, channel), count in by_outcome.items():
        assert (
            moved(
                "fraud_scorer_decisions_total", decision=decision, channel=channel, degraded="false"
            )
            == count
        )
    assert moved("fraud_scorer_decisions_total") == 6
    assert moved("fraud_scorer_degraded_total") == 0

    for stage in ("lookup", "model", "policy", "total"):
        assert moved("fraud_scorer_stage_seconds_count", stage=stage) == 6, stage
    assert moved("fraud_scorer_stage_seconds_count", stage="explain") == 3  # flagged only
    # sub-millisecond buckets exist and the prediction of a tiny model falls in them
    assert moved("fraud_scorer_stage_seconds_bucket", stage="model", le="0.001") >= 1
    assert moved("fraud_scorer_online_lookup_seconds_count", outcome="ok") == 6
    served = 0
    for group in FRAUD_SCORING_V1.groups:  # features were written 5 minutes before
        name = group.versioned_name
        count = sum(a["feature_freshness"][name] is not None for a in answers)
        served += count
        assert moved("fraud_scorer_feature_age_seconds_count", group=name) == count, name
        assert moved("fraud_scorer_feature_age_seconds_bucket", group=name, le="120.0") == 0
        assert moved("fraud_scorer_feature_age_seconds_bucket", group=name, le="3600.0") == count
    assert served >= 6 * 3

    assert value(after, "fraud_scorer_model_info", model_tag=registered_model.tag) == 1
    assert label_values(after, "fraud_scorer_model_info", "model_tag") == {registered_model.tag}
    assert value(after, "fraud_scorer_model_loaded_timestamp_seconds") > 1.7e9
    # BentoML's own request histogram, with the sub-ms buckets of the service config
    assert moved("bentoml_service_request_duration_seconds_count", endpoint="/score") == 6
    assert ("bentoml_service_request_duration_seconds_bucket", "0.0005") in {
        (n, dict(ls).get("le")) for n, ls in after
    }


def test_counters_for_other_components_start_at_zero(multi_worker_scorer: Server):
    samples = scrape(multi_worker_scorer)
    for name, label, values in (
        ("fraud_scorer_shed_requests_total", "reason", {"overload", "queue_timeout"}),
        (
            "fraud_scorer_decision_log_dropped_total",
            "reason",
            {"buffer_full", "producer_error", "shutdown"},
        ),
        (
            "fraud_scorer_degraded_total",
            "reason",
            {"online_store_error", "online_store_skipped", "missing_features"},
        ),
    ):
        assert label_values(samples, name, label) == values, name


def test_each_worker_reports_memory_and_cpu(multi_worker_scorer: Server):
    samples = scrape(multi_worker_scorer)
    workers = label_values(samples, RSS, "worker")
    assert workers == {str(i) for i in range(1, WORKERS + 1)}
    for worker in workers:
        rss = value(samples, RSS, worker=worker)
        assert 50e6 < rss < 4e9, (worker, rss)
        assert value(samples, "fraud_scorer_worker_cpu_seconds_total", worker=worker) > 0.1
    # the default process collector is not part of BentoML's multi-process exposition
    assert not any(name.startswith("process_") for name, _ in samples)


def test_unknown_paths_collapse_into_one_series(multi_worker_scorer: Server):
    with httpx.Client(base_url=multi_worker_scorer.url, timeout=10.0) as client:
        for i in range(5):
            assert client.get(f"/scan/{i}/.env").status_code == 404
    samples = scrape(multi_worker_scorer)
    endpoints = label_values(samples, "bentoml_service_request_total", "endpoint")
    assert not any(e.startswith("/scan/") for e in endpoints), endpoints
    assert "other" in endpoints and "/score" in endpoints
    assert value(samples, "bentoml_service_request_total", endpoint="other") >= 5


def test_degraded_answers_by_reason(degraded_scorer: Server, customer: Customer):
    before = scrape(degraded_scorer)
    with httpx.Client(base_url=degraded_scorer.url, timeout=10.0) as client:
        for channel in ("ecommerce", "withdrawal"):  # second within the retry interval
            response = client.post("/score", json=customer.transaction(channel=channel))
            assert response.status_code == 200, response.text
            assert response.json()["degraded"] is True
    after = scrape(degraded_scorer)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("fraud_scorer_decisions_total", degraded="true") == 2
    assert moved("fraud_scorer_decisions_total", channel="withdrawal", degraded="true") == 1
    errors = moved("fraud_scorer_degraded_total", reason="online_store_error")
    skipped = moved("fraud_scorer_degraded_total", reason="online_store_skipped")
    assert errors >= 1 and errors + skipped == 2, (errors, skipped)
    assert value(after, "fraud_scorer_redis_errors_total", kind="connection") >= 1
    assert value(after, "fraud_scorer_online_lookup_seconds_count", outcome="error") >= 1
    assert moved("fraud_scorer_feature_age_seconds_count") == 0  # nothing was served
