"""The importer's columnar checks (``valid_rows``) against the per-event reference
(``validate_record``) on good and bad rows of every contract: the columnar mask is never looser,
equals the reference except where it is documented as conservative, and ``validate_rows``
accepts exactly the rows the reference accepts, with the reference's reasons."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    LABELS,
    TRANSACTIONS,
    RejectedEvent,
    validate_record,
)
from fraud_platform.lib.ingestion.import_mapping import load_mapping, mapped_frame
from fraud_platform.lib.ingestion.import_validation import (
    OFFSET,
    _reference_event,
    valid_rows,
    validate_rows,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 3, 1, 9, 30)

GOOD_TRANSACTION: dict[str, Any] = {
    "transaction_id": "t1",
    "event_time": T0,
    "user_id": "u1",
    "card_id": "c1",
    "merchant_id": "m1",
    "merchant_category": "grocery",
    "amount": 12.5,
    "currency": "EUR",
    "channel": "ecommerce",
    "counterparty_id": None,
    "device_id": "d1",
    "ip": "10.0.0.1",
    "country": "FR",
}
# One change per row; True: the reference accepts the row. "conservative": the columnar check
# sends it to the reference, which accepts it (strings without a visible ASCII character).
TRANSACTION_CASES: list[tuple[dict[str, Any], bool | str]] = [
    ({}, True),
    ({"transaction_id": "x" * 100}, True),
    ({"transaction_id": "x" * 101}, False),
    ({"transaction_id": ""}, False),
    ({"transaction_id": None}, False),
    ({"transaction_id": "   "}, False),
    ({"transaction_id": "a\tb"}, False),
    ({"transaction_id": "a\x00b"}, False),
    ({"transaction_id": "a\x85b"}, False),  # C1 control character
    ({"merchant_category": "東京"}, "conservative"),
    ({"merchant_category": "\u3000"}, False),  # only an ideographic space: blank
    ({"merchant_category": "\u3000x\u3000"}, True),
    ({"merchant_category": "é" * 100}, "conservative"),
    ({"merchant_category": "é" * 101}, False),
    ({"user_id": " u1 "}, True),
    ({"amount": 0.0}, False),
    ({"amount": -3.0}, False),
    ({"amount": 0.0001}, True),
    ({"amount": 0.00009}, False),
    ({"amount": 1e12}, True),
    ({"amount": 1.0000001e12}, False),
    ({"amount": math.nan}, False),
    ({"amount": math.inf}, False),
    ({"amount": None}, False),
    ({"event_time": None}, False),
    ({"event_time": datetime(1999, 12, 31, 23, 59, 59)}, False),
    ({"event_time": datetime(2000, 1, 1)}, True),
    ({"event_time": datetime(2026, 11, 20, 12, 10)}, True),  # at now + 10 min
    ({"event_time": datetime(2026, 11, 20, 12, 10, 0, 1)}, False),
    ({"channel": "p2p"}, False),  # p2p without a counterparty
    ({"channel": "p2p", "counterparty_id": "u2"}, True),
    ({"channel": "atm"}, False),
    ({"channel": None}, False),
    ({"counterparty_id": ""}, False),
    ({"counterparty_id": "u9"}, True),
    ({"country": "\x7f"}, False),
]


def _frame(base: dict[str, Any], cases: list[tuple[dict[str, Any], Any]]) -> pl.DataFrame:
    rows = [{**base, **change} for change, _ in cases]
    schema = {
        name: pl.Datetime("us")
        if isinstance(value, datetime)
        else pl.Float64
        if isinstance(value, float)
        else pl.Boolean
        if isinstance(value, bool)
        else pl.Utf8
        for name, value in base.items()
    }
    return pl.DataFrame(rows, schema=schema)


def _reference(
    contract: str, source: pl.DataFrame, columns: dict[str, str], constants: dict[str, Any]
) -> list[str | None]:
    """Per row: None when validate_record accepts the mapped row, else its reason."""
    mapped = mapped_frame(source, contract, columns, constants)
    renamed = {column: field for field, column in columns.items()}
    outcomes: list[str | None] = []
    for row, raw in zip(mapped.to_dicts(), source.to_dicts(), strict=True):
        event = _reference_event(row, {renamed.get(k, k): v for k, v in raw.items()})
        try:
            validate_record(contract, event, NOW)
        except RejectedEvent as exc:
            outcomes.append(str(exc))
            continue
        outcomes.append(None)
    return outcomes


def _check(
    contract: str, source: pl.DataFrame, expected: list[bool | str], defaults: dict[str, Any]
) -> None:
    spec = load_mapping(contract, defaults=defaults)
    columns, constants = spec.resolve(source.columns)
    reference = _reference(contract, source, columns, constants)
    assert [r is None for r in reference] == [e is not False for e in expected]
    mask = (
        mapped_frame(source, contract, columns, constants)
        .select(valid_rows(contract, constants, NOW, set()))
        .to_series()
        .to_list()
    )
    for i, (fast, ref, want) in enumerate(zip(mask, reference, expected, strict=True)):
        assert not fast or ref is None, f"row {i}: columnar accepts, reference says {ref!r}"
        if want != "conservative":
            assert fast == (ref is None), f"row {i}: columnar {fast}, reference {ref!r}"
        else:
            assert not fast and ref is None, f"row {i} is no longer conservative: update"
    first = 1000
    checked = validate_rows(source, first, contract, columns, constants, NOW)
    assert checked.accepted[OFFSET].to_list() == [
        first + i for i, r in enumerate(reference) if r is None
    ]
    assert [(o, reason) for o, _, reason in checked.rejects] == [
        (first + i, r) for i, r in enumerate(reference) if r is not None
    ]


def test_transactions_columnar_checks_agree_with_the_reference() -> None:
    source = _frame(GOOD_TRANSACTION, TRANSACTION_CASES)
    _check(TRANSACTIONS, source, [e for _, e in TRANSACTION_CASES], {})


def test_transactions_from_text_columns_agree_with_the_reference() -> None:
    # A CSV file: every column is text, converted per field; unconvertible values are rejected
    # with the reference's reason on the source text.
    cases: list[tuple[dict[str, Any], bool | str]] = [
        ({}, True),
        ({"amount": "lots"}, False),
        ({"amount": " 7 "}, True),
        ({"amount": "1e3"}, True),
        ({"amount": "-1"}, False),
        ({"event_time": "yesterday"}, False),
        ({"event_time": "2026-03-01T10:00:00+02:00"}, True),
        ({"event_time": "2026-03-01"}, True),
        ({"event_time": "2126-03-01 10:00:00"}, False),
        ({"user_id": "\u00a0"}, False),
    ]
    base = {k: v for k, v in GOOD_TRANSACTION.items()}
    base |= {"event_time": "2026-03-01 09:30:00", "amount": "12.5"}
    source = pl.DataFrame([{**base, **c} for c, _ in cases], schema=dict.fromkeys(base, pl.Utf8))
    _check(TRANSACTIONS, source, [e for _, e in cases], {})


@pytest.mark.parametrize("channel", ["p2p", "ecommerce"])
def test_a_constant_channel_still_requires_a_counterparty_for_p2p(channel: str) -> None:
    base = {k: v for k, v in GOOD_TRANSACTION.items() if k != "channel"}
    cases: list[tuple[dict[str, Any], bool | str]] = [
        ({"counterparty_id": None}, channel != "p2p"),
        ({"counterparty_id": "u2"}, True),
    ]
    _check(TRANSACTIONS, _frame(base, cases), [e for _, e in cases], {"channel": channel})


def test_account_events_and_labels_agree_with_the_reference() -> None:
    event = {
        "event_id": "e1",
        "event_time": T0,
        "user_id": "u1",
        "event_type": "login",
        "device_id": "d1",
        "ip": "10.0.0.1",
        "country": "FR",
    }
    cases: list[tuple[dict[str, Any], bool | str]] = [
        ({}, True),
        ({"event_type": "teleport"}, False),
        ({"event_type": None}, False),
        ({"event_id": "\x1b[31m"}, False),
        ({"event_time": datetime(2030, 1, 1)}, False),
    ]
    _check(ACCOUNT_EVENTS, _frame(event, cases), [e for _, e in cases], {})
    label = {
        "transaction_id": "t1",
        "label_time": T0,
        "is_fraud": True,
        "fraud_type": "stolen_card",
    }
    cases = [
        ({}, True),
        ({"fraud_type": None}, True),
        ({"fraud_type": "alien"}, False),
        ({"is_fraud": None}, False),
        ({"label_time": datetime(1990, 1, 1)}, False),
        ({"transaction_id": "t" * 101}, False),
    ]
    _check(LABELS, _frame(label, cases), [e for _, e in cases], {})


def test_a_timezone_naive_source_time_is_utc() -> None:
    source = _frame(GOOD_TRANSACTION, [({}, True)])
    spec = load_mapping(TRANSACTIONS)
    columns, constants = spec.resolve(source.columns)
    checked = validate_rows(source, 0, TRANSACTIONS, columns, constants, NOW)
    assert checked.accepted["event_time"].to_list() == [T0.replace(tzinfo=UTC)]
    assert NOW - timedelta(days=365) < checked.accepted["event_time"][0] < NOW
