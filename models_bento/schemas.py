"""Request and response types of the FraudScorer service.

``TransactionRequest`` mirrors the transaction contract (``fraud_platform.lib.contracts.events``) field
by field, with descriptions for the OpenAPI page; its final validator runs the contract's own
``validate_record``, so the service accepts exactly what the Kafka ingestion accepts (plus an
optional ``event_time`` that defaults to now when absent). A unit test keeps the two in step.
Pydantic checks only JSON types here; values (lengths, characters, amount and time bounds) are
the contract's checks, stated again in the JSON schema only so that clients and fuzzers see them.

BentoML answers a request that fails validation (bad JSON included) with HTTP 400 and
``ValidationErrorResponse``; ``loc`` names the field, empty for whole-request (contract) checks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import bentoml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from fraud_platform.lib.contracts.events import (
    CHANNELS,
    CONTROL_CHARACTERS,
    MAX_AMOUNT,
    MAX_STRING_CHARS,
    MIN_AMOUNT,
    SCHEMA_VERSION,
    TRANSACTIONS,
    RejectedEvent,
    format_timestamp,
    parse_timestamp,
    validate_record,
)

Channel = Literal[tuple(sorted(CHANNELS))]  # type: ignore[valid-type]

EXAMPLE_TRANSACTION: dict[str, Any] = {
    "transaction_id": "t7-00000013",
    "event_time": "2026-03-01T12:00:00Z",
    "user_id": "u_d87cb59952",
    "card_id": "card_71d603172e88",
    "merchant_id": "m_00243",
    "merchant_category": "electronics",
    "amount": 129.99,
    "currency": "EUR",
    "channel": "ecommerce",
    "counterparty_id": None,
    "device_id": "dev_b623625967",
    "ip": "203.0.113.7",
    "country": "DE",
}

# The contract's string rule as a JSON-schema pattern: no control character, one non-space.
ID_PATTERN = f"^[^{CONTROL_CHARACTERS}]*[^\\s{CONTROL_CHARACTERS}][^{CONTROL_CHARACTERS}]*$"
_ID: dict[str, Any] = {
    "min_length": 1,
    "strict": True,
    "json_schema_extra": {"maxLength": MAX_STRING_CHARS, "pattern": ID_PATTERN},
}


def _p2p_needs_counterparty(schema: dict[str, Any]) -> None:
    """The contract's cross-field rule in the schema: p2p transfers carry a counterparty_id."""
    others = sorted(CHANNELS - {"p2p"})
    counterparty = {"type": "string", "minLength": 1, "maxLength": MAX_STRING_CHARS}
    schema["anyOf"] = [
        {"properties": {"channel": {"enum": others}}},
        {
            "properties": {"channel": {"enum": ["p2p"]}, "counterparty_id": counterparty},
            "required": ["counterparty_id"],
        },
    ]


def _example_and_p2p_rule(schema: dict[str, Any]) -> None:
    schema["example"] = EXAMPLE_TRANSACTION
    _p2p_needs_counterparty(schema)


class TransactionRequest(bentoml.IODescriptor):
    """One card/account transaction to score (the ``transactions`` topic contract).

    (An ``IODescriptor`` so BentoML uses it as is: validation errors then name
    ``TransactionRequest`` rather than a generated wrapper class.)
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra=_example_and_p2p_rule)

    transaction_id: str = Field(description="Unique id of the transaction.", **_ID)
    event_time: AwareDatetime = Field(
        default_factory=lambda: datetime.now(UTC),
        description="When the transaction happened (ISO-8601 with an offset, from 2000 on and at "
        "most 10 minutes ahead of the server's clock). Omit it to mean now (null is rejected). "
        "Features are looked up as known strictly before this time.",
    )
    user_id: str = Field(description="Account holder.", **_ID)
    card_id: str = Field(description="Payment-card token.", **_ID)
    merchant_id: str = Field(description="Merchant (payee for card payments).", **_ID)
    merchant_category: str = Field(description="Merchant category, e.g. 'grocery'.", **_ID)
    amount: float = Field(
        allow_inf_nan=False,
        strict=True,
        description=f"Amount in `currency`, from {MIN_AMOUNT:g} to {MAX_AMOUNT:g}.",
        json_schema_extra={"minimum": MIN_AMOUNT, "maximum": MAX_AMOUNT},
    )
    currency: str = Field(description="ISO-4217 currency code.", **_ID)
    channel: Channel = Field(description="Payment channel.")
    counterparty_id: str | None = Field(
        None, description="Receiving account; required when channel is 'p2p'.", **_ID
    )
    device_id: str = Field(description="Device the transaction came from.", **_ID)
    ip: str = Field(description="Client IP address.", **_ID)
    country: str = Field(description="ISO-3166 country of the transaction.", **_ID)

    @field_validator("event_time", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        """The contract's parsing: an ISO-8601 string with an offset that exists in UTC."""
        if isinstance(value, datetime):
            return value
        try:
            return parse_timestamp(value)
        except RejectedEvent as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _contract(self) -> TransactionRequest:
        self.event_time = self.event_time.astimezone(UTC)
        try:
            validate_record(TRANSACTIONS, self.to_event())
        except RejectedEvent as exc:
            raise ValueError(str(exc)) from None
        return self

    def to_event(self) -> dict[str, Any]:
        """The contract event (as it would travel on Kafka)."""
        event: dict[str, Any] = {"schema_version": SCHEMA_VERSION, **self.__dict__}
        event["event_time"] = format_timestamp(self.event_time)
        return event


class Reason(BaseModel):
    """Why the transaction got its score or decision."""

    kind: Literal["model", "rule"] = Field(
        description="'model': a top SHAP contribution; 'rule': a business rule that fired."
    )
    name: str = Field(description="Feature name (model) or rule name (rule).")
    value: float | str | None = Field(None, description="The feature's value, as the model saw it.")
    contribution: float | None = Field(
        None, description="SHAP contribution towards fraud, in log-odds."
    )
    action: Literal["review", "decline"] | None = Field(None, description="What the rule demands.")
    detail: str | None = Field(None, description="What the rule checks.")


class ScoreResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str = Field(description="Id of this scoring request (also in the score log).")
    transaction_id: str
    score: float = Field(ge=0.0, le=1.0, description="Model score in [0, 1]; higher = riskier.")
    decision: Literal["approve", "review", "decline"] = Field(
        description="Most severe of the model's threshold decision and the rules that fired."
    )
    reasons: list[Reason] = Field(
        description="Top SHAP reasons (for transactions not approved) and rule hits."
    )
    model_version: str = Field(description="Tag of the model that scored, e.g. fraud_catboost:v1.")
    feature_freshness: dict[str, float | None] = Field(
        description="Per feature group: age in seconds of the features used; null = none found."
    )
    degraded: bool = Field(
        description="True when the score was computed without some online features."
    )
    degraded_reason: str | None = Field(None, description="Why the answer is degraded.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    features: list[str]
    categorical_features: list[str]
    thresholds: dict[str, float]
    metrics: dict[str, Any] = Field(description="Evaluation metrics stored with the model.")
    rules: list[dict[str, str]]
    explain: str = Field(description="When SHAP reasons are computed: always|flagged|never.")
    created_at: str
    champion: bool = Field(
        description="True if the tag is the champion in the model registry (not the fallback)."
    )
    metadata: dict[str, Any] = Field(description="The model-store metadata as saved.")


class Pong(BaseModel):
    ok: bool = True
