"""Overload against a real ``bentoml serve``: past the concurrency bound and its short line the
service answers 503 with a JSON message and ``Retry-After``, counts it, and answers every
request.

The server has one worker, a bound of one request in progress and a line of at most 20 ms; a
burst of concurrent requests (open loop: all sent without waiting for answers) must then be
partly refused. (The line's rules, in process: tests/unit/serving/test_load_shedder.py.) What is
checked is behaviour, not speed: every request gets an HTTP answer (the client's generous
timeout is only there so a hang fails the test instead of blocking it), the only answers are a
decision or a 503 refusal, and the shed counter equals the refusals the client saw (refused in
front of BentoML's middlewares, they are not in its request counter; the scored ones are).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from models_bento.early_refusal import PROTOCOL_PATH
from models_bento.errors import ErrorResponse
from models_bento.schemas import ScoreResponse
from models_bento.shedding import RETRY_AFTER_S

from .conftest import REDIS_URL, Customer, Registered, Server, start_server, stop_server
from .test_metrics import scrape, value

pytestmark = pytest.mark.serving

BURST = 200
CLIENT_TIMEOUT_S = 60.0
SHED = "fraud_scorer_shed_requests_total"
HTTP_TOTAL = "bentoml_service_request_total"


@pytest.fixture(scope="module")
def bounded_scorer(registered_model: Registered, customer: Customer) -> Iterator[Server]:
    server = start_server(
        registered_model,
        REDIS_URL,
        "overload",
        extra_env={
            "FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY": "1",
            "FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS": "20",
        },
        workers=1,
    )
    yield server
    stop_server(server)


async def burst(url: str, bodies: list[dict]) -> list[httpx.Response | BaseException]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/score", json=body) for body in bodies), return_exceptions=True
        )


def test_past_the_bound_the_service_answers_503(bounded_scorer: Server, customer: Customer):
    before = scrape(bounded_scorer)
    bodies = [customer.transaction() for _ in range(BURST)]
    answers = asyncio.run(burst(bounded_scorer.url, bodies))

    failed = [a for a in answers if isinstance(a, BaseException)]
    assert not failed, f"{len(failed)} requests got no answer, e.g. {failed[0]!r}"
    responses = [a for a in answers if isinstance(a, httpx.Response)]
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}, {r.status_code: r.text for r in responses}
    refused = [r for r in responses if r.status_code == 503]
    scored = [r for r in responses if r.status_code == 200]
    assert refused, "a burst of 200 against a bound of 1 was never refused"
    assert scored, "nothing was scored"
    for response in refused:
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert response.headers["content-type"] == "application/json"
        assert "over capacity" in ErrorResponse.model_validate(response.json()).error
    by_transaction = {body["transaction_id"] for body in bodies}
    for response in scored:
        decision = ScoreResponse.model_validate(response.json())
        assert decision.transaction_id in by_transaction

    after = scrape(bounded_scorer)
    shed = sum(
        value(after, SHED, reason=reason) - value(before, SHED, reason=reason)
        for reason in ("overload", "queue_timeout")
    )
    assert shed == len(refused)

    # Refused in front of BentoML's middlewares (models_bento.shedding.FrontDoor): its request
    # counter has the admitted requests only, every one of them answered 200.
    def served(code: str) -> float:
        return value(after, HTTP_TOTAL, endpoint="/score", http_response_code=code) - value(
            before, HTTP_TOTAL, endpoint="/score", http_response_code=code
        )

    assert served("200") == len(scored)
    assert served("503") == 0


def test_uvicorn_serves_with_the_early_refusal_protocol(bounded_scorer: Server):
    # the 503s it gives are byte for byte the shedder's (tests/unit/serving/test_early_refusal.py)
    assert f"HTTP protocol: {PROTOCOL_PATH}" in bounded_scorer.log_tail(1_000_000)


def test_the_service_scores_again_once_the_burst_is_over(
    bounded_scorer: Server, customer: Customer
):
    asyncio.run(burst(bounded_scorer.url, [customer.transaction() for _ in range(50)]))
    with httpx.Client(base_url=bounded_scorer.url, timeout=CLIENT_TIMEOUT_S) as client:
        for _ in range(5):  # one at a time: never more than the bound in progress
            response = client.post("/score", json=customer.transaction())
            assert response.status_code == 200, response.text
        assert client.get("/livez").status_code == 200
        assert client.get("/metrics").status_code == 200  # not subject to the bound


@pytest.fixture(scope="module")
def burst_scorer(registered_model: Registered, customer: Customer) -> Iterator[Server]:
    """A bound of one, a 1 ms line for overload, and a burst allowance far above what a burst of
    ``SMALL_BURST`` takes to score."""
    server = start_server(
        registered_model,
        REDIS_URL,
        "burst",
        extra_env={
            "FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY": "1",
            "FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS": "1",
            "FRAUD_PLATFORM_SCORING_BURST_MS": "5000",
        },
        workers=1,
    )
    yield server
    stop_server(server)


SMALL_BURST = 20


def test_a_short_burst_waits_in_line_instead_of_being_refused(
    burst_scorer: Server, customer: Customer
):
    """What a worker stalled for a moment sees on its return: a few requests at once on an
    otherwise idle service. They queue (the line is younger than the burst allowance) and are
    all scored; with the 1 ms line alone most of them were refused."""
    with httpx.Client(base_url=burst_scorer.url, timeout=CLIENT_TIMEOUT_S) as client:
        assert client.post("/score", json=customer.transaction()).status_code == 200  # warm
    before = scrape(burst_scorer)
    answers = asyncio.run(
        burst(burst_scorer.url, [customer.transaction() for _ in range(SMALL_BURST)])
    )
    statuses = [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers]
    assert statuses == [200] * SMALL_BURST
    after = scrape(burst_scorer)
    for reason in ("overload", "queue_timeout"):
        assert value(after, SHED, reason=reason) == value(before, SHED, reason=reason)


def test_the_untraced_routes_are_the_api_routes():
    from models_bento.service import API_ROUTES, FraudScorer

    assert set(API_ROUTES) == {method.route for method in FraudScorer.apis.values()}
