"""``/score`` answered by ``ScoreRoute`` (the default) and by BentoML's own API route
(``FRAUD_PLATFORM_SCORING_FAST_ROUTE=false``): two real servers on the same model, Redis and
features must give the same answers, byte for byte, to good and bad requests alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from .conftest import REDIS_URL, Customer, Registered, Server, start_server, stop_server

pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def bentoml_route(registered_model: Registered, customer: Customer) -> Iterator[Server]:
    server = start_server(
        registered_model,
        REDIS_URL,
        "bentoml-route",
        extra_env={"FRAUD_PLATFORM_SCORING_FAST_ROUTE": "false"},
    )
    yield server
    stop_server(server)


def both(
    scorer: Server, bentoml_route: Server, content: bytes, headers: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    return tuple(  # type: ignore[return-value]
        httpx.post(f"{server.url}/score", content=content, headers=headers, timeout=10.0)
        for server in (scorer, bentoml_route)
    )


def test_the_same_transaction_gets_the_same_answer(
    scorer: Server, bentoml_route: Server, customer: Customer
):
    event_time = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()  # same feature ages
    for overrides in (
        {"channel": "p2p", "counterparty_id": customer.counterparty_id},
        {"amount": 9_999.0, "merchant_category": "crypto"},
        {"user_id": "never-seen-user"},  # degraded
    ):
        body = json.dumps(customer.transaction(event_time=event_time, **overrides)).encode()
        headers = {"content-type": "application/json", "x-request-id": "same-request"}
        fast, framework = both(scorer, bentoml_route, body, headers)
        assert (fast.status_code, framework.status_code) == (200, 200), (fast.text, overrides)
        assert fast.json()["request_id"] == "same-request"
        assert fast.content == framework.content, overrides
        assert fast.headers["content-type"] == framework.headers["content-type"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"transaction_id": "t-1", ',  # not JSON
        b"",  # no body
        b"[]",
        b'{"transaction_id": "t-1"}',  # fields missing
        b'{"transaction_id": "t-1", "amount": 1e308, "channel": "pigeon", "extra": 1}',
        '{"transaction_id": "caf\u00e9\\u0007", "event_time": "9999-12-31T23:00:00-14:00"}'.encode(),
    ],
)
def test_a_rejected_request_gets_the_same_400(
    scorer: Server, bentoml_route: Server, customer: Customer, content: bytes
):
    fast, framework = both(scorer, bentoml_route, content, {"content-type": "application/json"})
    assert (fast.status_code, framework.status_code) == (400, 400), (fast.text, framework.text)
    assert fast.content == framework.content
    assert fast.headers["content-type"] == framework.headers["content-type"]


def test_a_rejection_is_logged_as_one_warning_line_on_both_routes(
    scorer: Server, bentoml_route: Server
):
    content = b'{"transaction_id": "logged-rejection-7f3a"}'
    both(scorer, bentoml_route, content, {"content-type": "application/json"})
    for server in (scorer, bentoml_route):
        lines = [line for line in server.log_tail().splitlines() if "rejected request" in line]
        assert any("[WARNING]" in line and "/score" in line for line in lines), lines[-3:]
        assert "logged-rejection-7f3a" not in server.log_tail()  # no input values
