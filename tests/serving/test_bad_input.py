"""Bad input against a real ``bentoml serve``: a 4xx with a message, never a 500 or a score;
the same limits as Kafka ingestion (the contract); a valid OpenAPI 3.0 document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from fraud_platform.lib.contracts.events import (
    MAX_PAYLOAD_BYTES,
    MAX_STRING_CHARS,
    TRANSACTIONS,
    RejectedEvent,
    encode_event,
    format_timestamp,
    validate_event,
)
from models_bento.errors import ErrorResponse, ValidationErrorResponse

from .conftest import Customer, Server

pytestmark = pytest.mark.serving

ROUTES = ("/score", "/model", "/ping")


@pytest.fixture(scope="module")
def client(scorer: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scorer.url, timeout=30.0) as http:
        yield http


def messages(response: httpx.Response) -> str:
    """The 400 body as declared (``ValidationErrorResponse``): its messages, joined."""
    body = ValidationErrorResponse.model_validate(response.json())
    return " | ".join(d.msg for d in body.detail)


def ingestion_rejects(body: dict[str, Any]) -> str:
    """Kafka ingestion's reason for rejecting the same transaction (it must reject it too)."""
    event = {"schema_version": 1, "event_time": format_timestamp(datetime.now(UTC)), **body}
    with pytest.raises(RejectedEvent) as rejected:
        validate_event(TRANSACTIONS, json.dumps(event).encode())
    return str(rejected.value)


BAD_FIELDS = [
    (
        "event_time overflows UTC (late)",
        {"event_time": "9999-12-31T23:00:00-14:00"},
        "out of range",
    ),
    (
        "event_time overflows UTC (early)",
        {"event_time": "0001-01-01T00:00:00+14:00"},
        "out of range",
    ),
    ("event_time in 1900", {"event_time": "1900-06-01T12:00:00Z"}, "is before 2000-01-01"),
    ("event_time as epoch number", {"event_time": 1767225600}, "ISO-8601 string, got int"),
    ("event_time null", {"event_time": None}, "ISO-8601 string, got NoneType"),
    ("amount 1e308", {"amount": 1e308}, "must be between 0.0001 and 1e+12"),
    ("amount 5e-324", {"amount": 5e-324}, "must be between 0.0001 and 1e+12"),
    (
        "id with NUL",
        {"transaction_id": "t-\x00-1"},
        "'transaction_id' contains a control character",
    ),
    ("id with BEL", {"user_id": "u\x07"}, "'user_id' contains a control character"),
    ("id with CR/LF", {"card_id": "c-1\r\n"}, "'card_id' contains a control character"),
    ("whitespace-only id", {"merchant_id": "   "}, "'merchant_id' is blank"),
    ("whitespace-only counterparty", {"channel": "p2p", "counterparty_id": "\u2003"}, "is blank"),
    ("id too long", {"device_id": "d" * (MAX_STRING_CHARS + 1)}, "longer than 100 characters"),
]


@pytest.mark.parametrize(("case", "change", "expected"), BAD_FIELDS, ids=[c[0] for c in BAD_FIELDS])
def test_bad_field_is_a_400_with_the_contract_reason(
    client: httpx.Client, customer: Customer, case: str, change: dict[str, Any], expected: str
):
    body = customer.transaction(**change)
    response = client.post("/score", json=body)
    assert response.status_code == 400, (case, response.status_code, response.text)
    assert expected in messages(response), (case, response.text)
    if case != "event_time null":  # on Kafka, the field is required (here: omit it for now)
        assert expected in ingestion_rejects(body), case


def test_ten_megabyte_id_is_a_413(client: httpx.Client, customer: Customer):
    body = customer.transaction(transaction_id="t" * 10_000_000)
    response = client.post("/score", json=body)
    assert response.status_code == 413, response.text[:500]
    error = ErrorResponse.model_validate(response.json()).error
    assert f"exceeds {MAX_PAYLOAD_BYTES} bytes" in error
    assert "exceeds" in ingestion_rejects(body)


def test_oversized_chunked_body_is_a_413(client: httpx.Client, customer: Customer):
    """No content-length: the limit holds while reading."""
    payload = json.dumps(customer.transaction(ip="1" * 40_000)).encode()
    chunks = (payload[i : i + 4096] for i in range(0, len(payload), 4096))
    response = client.post("/score", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text[:500]
    assert "exceeds" in ErrorResponse.model_validate(response.json()).error


@pytest.mark.parametrize("route", ROUTES)
def test_multipart_body_is_a_415_on_every_route(client: httpx.Client, route: str):
    response = client.post(route, files={"file": ("t.json", b"{}", "application/json")})
    assert response.status_code == 415, response.text
    error = ErrorResponse.model_validate(response.json()).error
    assert "'multipart/form-data'" in error and "must be application/json" in error


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, "no Content-Type"),
        ("text/plain", "Content-Type 'text/plain'"),
        ("application/x-www-form-urlencoded", "Content-Type 'application/x-www-form-urlencoded'"),
    ],
)
def test_score_needs_a_json_content_type(
    client: httpx.Client, customer: Customer, content_type: str | None, expected: str
):
    headers = {"content-type": content_type} if content_type else {}
    content = json.dumps(customer.transaction()).encode()
    response = client.post("/score", content=content, headers=headers)
    assert response.status_code == 415, response.text
    assert expected in ErrorResponse.model_validate(response.json()).error


def test_json_with_charset_is_scored(client: httpx.Client, customer: Customer):
    content = json.dumps(customer.transaction()).encode()
    headers = {"content-type": "application/json; charset=utf-8"}
    assert client.post("/score", content=content, headers=headers).status_code == 200


def test_bodyless_routes_take_an_empty_request(client: httpx.Client):
    assert client.post("/ping").json() == {"ok": True}
    assert client.post("/model").status_code == 200


def test_a_valid_transaction_passes_ingestion_and_scoring(client: httpx.Client, customer: Customer):
    """The limits agree: what the service scores, ingestion stores."""
    body = customer.transaction(channel="p2p", counterparty_id=customer.counterparty_id)
    response = client.post("/score", json={**body, "event_time": "2026-01-01T00:00:00+14:00"})
    assert response.status_code == 200, response.text
    validate_event(
        TRANSACTIONS,
        encode_event({"schema_version": 1, **body, "event_time": "2026-01-01T00:00:00+14:00"}),
    )


def test_published_openapi_is_valid_openapi_30(client: httpx.Client):
    response = client.get("/docs.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.0.")
    validate(spec)  # raises on an invalid document
    text = json.dumps(spec)
    assert '"type": "null"' not in text
    schemas = spec["components"]["schemas"]
    request = schemas["TransactionRequest"]
    # p2p needs a counterparty: in the schema, not only in the description
    p2p = next(b for b in request["anyOf"] if b["properties"]["channel"]["enum"] == ["p2p"])
    assert p2p["required"] == ["counterparty_id"]
    assert request["properties"]["amount"]["minimum"] > 0
    assert "event_time" not in request["required"]
    assert schemas["ScoreResponse"]["properties"]["degraded_reason"]["nullable"] is True
    score = spec["paths"]["/score"]["post"]
    bad = score["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[bad.rsplit("/", 1)[1]]["properties"]["detail"]["type"] == "array"
    assert {"413", "415"} <= set(score["responses"])
