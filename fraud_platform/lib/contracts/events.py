"""Event contracts of the Kafka topics, and their validation.

The three input topics (``TOPICS``) carry what happened; ``scores`` carries what the scoring
service decided (one event per decision, produced by ``lib/serving/decision_log.py``).
Every event is a JSON object carrying ``schema_version``. ``validate_event`` turns a raw Kafka
value into a typed record or a reject reason; bronze stores the typed record, the dead-letter
table stores the reason with the raw payload. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

SCHEMA_VERSION = 1
MAX_PAYLOAD_BYTES = 16_384
MAX_FUTURE_SKEW = timedelta(minutes=10)
# Events older than this are rejected: a 1900 or year-1 time is a client bug, not a transaction.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
# Ids and codes: at most this many characters (12 such fields of \u-escaped characters still fit
# in MAX_PAYLOAD_BYTES), no control characters, not blank.
MAX_STRING_CHARS = 100
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"  # Unicode category Cc, as a regex class body
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")
# Amounts in currency units: from the smallest minor unit of any ISO-4217 currency (4 decimals)
# up to a bound no real payment reaches (1e12 IDR is ~60M EUR); 5e-324 or 1e308 is a bug.
MIN_AMOUNT = 0.0001
MAX_AMOUNT = 1e12

TRANSACTIONS = "transactions"
ACCOUNT_EVENTS = "account_events"
LABELS = "labels"
TOPICS: tuple[str, ...] = (TRANSACTIONS, ACCOUNT_EVENTS, LABELS)
SCORES = "scores"
ALL_TOPICS: tuple[str, ...] = (*TOPICS, SCORES)

CHANNELS = frozenset({"card_present", "ecommerce", "p2p", "withdrawal", "deposit"})
ACCOUNT_EVENT_TYPES = frozenset(
    {
        "login",
        "login_failed",
        "password_change",
        "device_added",
        "twofa_disabled",
        "withdrawal_address_added",
    }
)
DECISIONS = frozenset({"approve", "review", "decline"})
FRAUD_TYPES = frozenset(
    {"card_testing", "account_takeover", "stolen_card", "p2p_scam", "compromised_merchant"}
)

# Columns bronze adds to every event: where it came from in Kafka and when it was ingested.
KAFKA_COLUMNS: dict[str, pa.DataType] = {
    "_topic": pa.string(),
    "_partition": pa.int32(),
    "_offset": pa.int64(),
    "_ingested_at": pa.timestamp("us", tz="UTC"),
}

TS = pa.timestamp("us", tz="UTC")
# Bronze tables are partitioned by the UTC date of the event's own time (``EVENT_TIME_FIELD``),
# not of its arrival: a late event lands in its own date's partition.
EVENT_DATE_COLUMN = "_event_date"


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "str" | "float" | "bool" | "ts" | "json" (an object or array, stored as text)
    required: bool = True
    choices: frozenset[str] | None = None
    positive: bool = False
    limits: tuple[float, float] | None = None  # inclusive bounds, checked after ``positive``

    @property
    def arrow_type(self) -> pa.DataType:
        kinds = {"str": pa.string(), "float": pa.float64(), "bool": pa.bool_(), "ts": TS}
        return kinds.get(self.kind, pa.string())


EVENT_FIELDS: dict[str, tuple[Field, ...]] = {
    TRANSACTIONS: (
        Field("transaction_id", "str"),
        Field("event_time", "ts"),
        Field("user_id", "str"),
        Field("card_id", "str"),
        Field("merchant_id", "str"),
        Field("merchant_category", "str"),
        Field("amount", "float", positive=True, limits=(MIN_AMOUNT, MAX_AMOUNT)),
        Field("currency", "str"),
        Field("channel", "str", choices=CHANNELS),
        Field("counterparty_id", "str", required=False),
        Field("device_id", "str"),
        Field("ip", "str"),
        Field("country", "str"),
    ),
    ACCOUNT_EVENTS: (
        Field("event_id", "str"),
        Field("event_time", "ts"),
        Field("user_id", "str"),
        Field("event_type", "str", choices=ACCOUNT_EVENT_TYPES),
        Field("device_id", "str"),
        Field("ip", "str"),
        Field("country", "str"),
    ),
    LABELS: (
        Field("transaction_id", "str"),
        Field("label_time", "ts"),
        Field("is_fraud", "bool"),
        Field("fraud_type", "str", required=False, choices=FRAUD_TYPES),
    ),
}
# One decision of the scoring service: the request (the transaction contract's fields, checked
# the same way), then what was decided with what. ``features`` are the model inputs as served
# ({name: value}), ``feature_age_s`` the age per feature group ({group: seconds | null}),
# ``reasons`` the explanation ([{"name", "value", "contribution", ...}]).
EVENT_FIELDS[SCORES] = (
    Field("request_id", "str"),
    Field("scored_at", "ts"),
    *EVENT_FIELDS[TRANSACTIONS],
    Field("score", "float"),
    Field("decision", "str", choices=DECISIONS),
    Field("model_version", "str"),
    Field("feature_service", "str"),
    Field("degraded", "bool"),
    Field("degraded_reason", "str", required=False),
    Field("features", "json"),
    Field("feature_age_s", "json"),
    Field("reasons", "json"),
)

EVENT_ID_FIELD = {
    TRANSACTIONS: "transaction_id",
    ACCOUNT_EVENTS: "event_id",
    LABELS: "transaction_id",
    SCORES: "request_id",
}
# A decision's bronze partition is the date it was made (``scored_at``), not the transaction's.
EVENT_TIME_FIELD = {
    TRANSACTIONS: "event_time",
    ACCOUNT_EVENTS: "event_time",
    LABELS: "label_time",
    SCORES: "scored_at",
}
# The Kafka message key of each topic: a user's transactions and account events share a
# partition, so their order is kept; a label and a decision go with their transaction id.
KEY_FIELD = {
    TRANSACTIONS: "user_id",
    ACCOUNT_EVENTS: "user_id",
    LABELS: "transaction_id",
    SCORES: "transaction_id",
}


def bronze_schema(topic: str) -> pa.Schema:
    """Arrow schema of the bronze Delta table of ``topic``: contract fields, then Kafka columns."""
    fields = [pa.field("schema_version", pa.int32(), nullable=False)]
    fields += [pa.field(f.name, f.arrow_type, nullable=not f.required) for f in EVENT_FIELDS[topic]]
    fields += [pa.field(name, dtype, nullable=False) for name, dtype in KAFKA_COLUMNS.items()]
    fields.append(pa.field(EVENT_DATE_COLUMN, pa.date32(), nullable=False))
    return pa.schema(fields)


DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("raw_payload", pa.binary()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("rejected_at", TS, nullable=False),
    ]
)


class RejectedEvent(ValueError):
    """An event that breaks its contract; the message is the reason stored in the DLQ."""


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 string with an offset (or ``Z``) to an aware UTC datetime."""
    if not isinstance(value, str):
        raise RejectedEvent(f"expected an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RejectedEvent(f"not an ISO-8601 timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        raise RejectedEvent(f"timestamp without a UTC offset: {value!r}")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise RejectedEvent(f"timestamp out of range in UTC: {value!r}") from None


def format_timestamp(value: datetime) -> str:
    """The wire format of timestamps: ISO-8601 in UTC with microseconds and ``Z``.

    ``isoformat`` rather than ``strftime``: the same text at a third of the cost (every published
    event has one or two)."""
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def _check_field(spec: Field, value: Any) -> Any:
    if spec.kind == "str":
        if not isinstance(value, str) or not value:
            raise RejectedEvent(f"field {spec.name!r} must be a non-empty string")
        if len(value) > MAX_STRING_CHARS:
            raise RejectedEvent(
                f"field {spec.name!r} is longer than {MAX_STRING_CHARS} characters ({len(value)})"
            )
        if _CONTROL.search(value):
            raise RejectedEvent(f"field {spec.name!r} contains a control character")
        if not value.strip():
            raise RejectedEvent(f"field {spec.name!r} is blank (only whitespace)")
        if spec.choices is not None and value not in spec.choices:
            raise RejectedEvent(
                f"field {spec.name!r} has unknown value {value!r}; "
                f"expected one of {sorted(spec.choices)}"
            )
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:  # a lone surrogate from a \\u escape: not storable
                raise RejectedEvent(f"field {spec.name!r} is not valid Unicode") from None
        return value
    if spec.kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RejectedEvent(f"field {spec.name!r} must be a number, got {type(value).__name__}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond the range of a double
            raise RejectedEvent(f"field {spec.name!r} must be finite") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise RejectedEvent(f"field {spec.name!r} must be finite")
        if spec.positive and value <= 0:
            raise RejectedEvent(f"field {spec.name!r} must be > 0, got {value}")
        if spec.limits is not None and not spec.limits[0] <= value <= spec.limits[1]:
            raise RejectedEvent(
                f"field {spec.name!r} must be between {spec.limits[0]:g} and "
                f"{spec.limits[1]:g}, got {value:g}"
            )
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise RejectedEvent(f"field {spec.name!r} must be a boolean")
        return value
    if spec.kind == "json":
        if not isinstance(value, dict | list):
            raise RejectedEvent(f"field {spec.name!r} must be a JSON object or array")
        return json.dumps(value)
    try:
        return parse_timestamp(value)
    except RejectedEvent as exc:
        raise RejectedEvent(f"field {spec.name!r}: {exc}") from None


def validate_record(topic: str, event: Any, now: datetime | None = None) -> dict[str, Any]:
    """Check a decoded event against its contract; returns the typed record or raises."""
    if topic not in EVENT_FIELDS:
        raise RejectedEvent(f"unknown topic {topic!r}")
    if not isinstance(event, dict):
        raise RejectedEvent(f"event must be a JSON object, got {type(event).__name__}")
    version = event.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RejectedEvent(f"unsupported schema_version {version!r}; expected {SCHEMA_VERSION}")
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for spec in EVENT_FIELDS[topic]:
        value = event.get(spec.name)
        if value is None:
            if spec.required:
                raise RejectedEvent(f"missing required field {spec.name!r}")
            record[spec.name] = None
            continue
        record[spec.name] = _check_field(spec, value)
    event_time = record[EVENT_TIME_FIELD[topic]]
    if event_time < EARLIEST_EVENT_TIME:
        raise RejectedEvent(
            f"{EVENT_TIME_FIELD[topic]} {format_timestamp(event_time)} is before "
            f"{format_timestamp(EARLIEST_EVENT_TIME)}"
        )
    now = now or datetime.now(UTC)
    if event_time > now + MAX_FUTURE_SKEW:
        raise RejectedEvent(
            f"{EVENT_TIME_FIELD[topic]} {format_timestamp(event_time)} is in the future "
            f"(more than {MAX_FUTURE_SKEW} ahead of {format_timestamp(now)})"
        )
    p2p = topic in (TRANSACTIONS, SCORES) and record["channel"] == "p2p"
    if p2p and not record["counterparty_id"]:
        raise RejectedEvent("p2p transactions need a counterparty_id")
    return record


def validate_event(
    topic: str, payload: bytes | None, now: datetime | None = None
) -> dict[str, Any]:
    """Raw Kafka value to a typed record; raises ``RejectedEvent`` with the reason."""
    if payload is None:
        raise RejectedEvent("empty message (null value)")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise RejectedEvent(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES} bytes")
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RejectedEvent(f"not valid JSON: {exc}") from None
    return validate_record(topic, event, now)


def event_key(topic: str, event: dict[str, Any]) -> bytes:
    """The Kafka message key of ``event`` on ``topic`` (its ``KEY_FIELD``, UTF-8)."""
    return event[KEY_FIELD[topic]].encode()


def encode_event(event: dict[str, Any]) -> bytes:
    """The wire encoding: compact JSON with timestamps in ``format_timestamp`` form.

    orjson: the bytes ``json.dumps(..., separators=(",", ":"))`` gives for the contracts' ASCII
    values at a tenth of the cost (non-ASCII text is UTF-8 instead of ``\\u`` escapes; a
    non-finite float becomes ``null``, which the contracts reject as they rejected ``NaN``)."""
    return orjson.dumps(
        {k: format_timestamp(v) if isinstance(v, datetime) else v for k, v in event.items()},
        # as json.dumps: numpy.float64 (a float subclass) and non-string keys (as strings)
        option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
    )
