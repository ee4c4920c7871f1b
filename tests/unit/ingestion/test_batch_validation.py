"""The columnar ``validate_batch`` agrees with ``validate_event`` on every event."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    LABELS,
    MAX_PAYLOAD_BYTES,
    TRANSACTIONS,
    RejectedEvent,
    encode_event,
    validate_event,
)
from fraud_platform.lib.ingestion.batch_validation import record_schema, validate_batch
from fraud_platform.lib.simulation import SimulationConfig, simulate


def _reference(
    contract: str, payloads: list[bytes | None], now: datetime
) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
    records, indices, rejects = [], [], []
    for i, payload in enumerate(payloads):
        try:
            records.append(validate_event(contract, payload, now))
        except RejectedEvent as exc:
            rejects.append((i, str(exc)))
            continue
        indices.append(i)
    schema = record_schema(contract)
    table = pa.table(
        [pa.array([r[f.name] for r in records], type=f.type) for f in schema], schema=schema
    )
    return table, indices, rejects


def _assert_same(contract: str, payloads: list[bytes | None], now: datetime) -> None:
    expected, expected_idx, expected_rejects = _reference(contract, payloads, now)
    table, indices, rejects = validate_batch(contract, payloads, now)
    assert rejects == expected_rejects
    assert indices == expected_idx
    assert table.schema == expected.schema
    assert table.equals(expected)
    assert table.to_pylist() == expected.to_pylist()


def _mutate(payload: bytes, **changes: object) -> bytes:
    event = json.loads(payload)
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key, None)
        else:
            event[key] = value
    return json.dumps(event).encode()


_DROP = object()


def _variants(payload: bytes, field: str, *values: object) -> list[bytes]:
    return [_mutate(payload, **{field: value}) for value in values]


def _malformed_transactions(good: list[bytes]) -> list[bytes | None]:
    g = good[0]
    p2p = next((p for p in good if json.loads(p)["channel"] == "p2p"), g)
    big = _mutate(g, note="x" * MAX_PAYLOAD_BYTES)
    return [
        None,
        b"",
        b"   ",
        b"not json",
        b"{not json}",
        b'{"schema_version":1,',
        b"\xff\xfe{}",
        b"[1, 2, 3]",
        b'"just a string"',
        b"42",
        b"null",
        b"{}",
        g + g,
        g.replace(b"{", b"{\n", 1),
        b"  " + g,
        g + b"  ",
        big,
        *_variants(
            g,
            "amount",
            "12",
            True,
            False,
            None,
            -5.0,
            0,
            0.0,
            12,
            12345678901234567890,
            1e308,
            [1.0],
            {"v": 1},
        ),
        g.replace(b'"amount":', b'"amount":NaN,"x":', 1),
        g.replace(b'"amount":', b'"amount":Infinity,"x":', 1),
        g.replace(b'"amount":', b'"amount":-Infinity,"x":', 1),
        g.replace(b'"amount":', b'"amount":1e400,"x":', 1),
        g.replace(b'"amount":', b'"amount":1' + b"0" * 400 + b',"x":', 1),
        g.replace(b'"amount":', b'"amount":1E2,"x":', 1),
        g.replace(b'"amount":', b'"amount":-0.0,"x":', 1),
        g.replace(b'"amount":', b'"amount":0.30000000000000004441,"x":', 1),
        g.replace(b'"amount":', b'"amount":5e-324,"x":', 1),
        g.replace(b'"amount":', b'"amount":01,"x":', 1),
        g.replace(b'"amount":', b'"amount":.5,"x":', 1),
        g.replace(b"{", b'{"amount":3.25,', 1),
        g.replace(b"{", b'{"zzz":null,', 1),
        g.replace(b"}", b'}{"schema_version":1}', 1),
        g.replace(b",", b",\r", 1),
        g.replace(b",", b", \t", 1),
        b'{"schema_version":1}\n' + g,
        _mutate(g, amount=_DROP),
        *_variants(g, "user_id", _DROP, "", 5, None, ["u"]),
        _mutate(g, device_id=True),
        *_variants(g, "channel", "carrier_pigeon", "P2P", None),
        *_variants(g, "counterparty_id", "", 7),
        *_variants(p2p, "counterparty_id", None, _DROP, "someone"),
        _mutate(g, channel="p2p", counterparty_id=None),
        _mutate(g, channel="p2p", counterparty_id="cp-1"),
        *_variants(g, "schema_version", 2, None, _DROP, "1", 1.0, True),
        *_variants(
            g,
            "event_time",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00+00:00",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T00:00:00.5Z",
            "2024-01-01T00:00:00.123Z",
            "2024-01-01T00:00:00.123456789Z",
            "2024-01-01T12:34:56.123456+05:30",
            "2024-01-01T12:34:56.123456-08:00",
            "2024-01-01T12:34:56.123456+23:59",
            "2024-01-01T12:34:56.123456+24:00",
            "2024-01-01T12:34:56.123456+01:00:30",
            "2024-01-01T23:59:60.000000Z",
            "2024-01-01T24:00:00.000000Z",
            "2024-02-30T00:00:00.000000Z",
            "2024-13-01T00:00:00.000000Z",
            "0000-01-01T00:00:00.000000Z",
            "0001-01-01T00:30:00.000000+01:00",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59.999999-01:00",
            "20240101T000000Z",
            "2024-01-01T00:00:00z",
            "yesterday",
            "",
            1700000000,
            None,
            "2999-01-01T00:00:00.000000Z",
            "2030-01-01T00:09:59.000000Z",
            "2030-01-01T00:10:00.000000Z",
            "2030-01-01T00:10:00.000001Z",
            "2030-01-01T01:10:00.000001+01:00",
        ),
        _mutate(g, extra_field={"nested": [1, 2]}, other=None),
        _mutate(g, user_id="caf\u00e9 \u2603 \U0001f600"),
        *_variants(
            g,
            "user_id",
            "x" * 100,
            "x" * 101,
            "\u00e9" * 101,
            "u\x00",
            "u\x07",
            "u\r\n",
            "u\x7f",
            "u\x85",
            " ",
            "\t ",
            "\u2003",
            "\u00e9",
            " \u00e9 ",
        ),
        *_variants(g, "amount", 0.0001, 0.00009, 1e12, 1.0000001e12, 1e-300),
        *_variants(
            g,
            "event_time",
            "1900-01-01T00:00:00.000000Z",
            "1999-12-31T23:59:59.999999Z",
            "2000-01-01T00:00:00.000000Z",
            "2000-01-01T00:30:00.000000+01:00",
        ),
        g.replace(b'"user_id":"', b'"user_id":"\\u00e9\\t\\"', 1),
        g.replace(b'"user_id":"', b'"user_id":"\\ud800', 1),
        g.replace(b'"user_id":', b'"user_id":"dup","user_id":', 1),
        g.replace(b'"user_id":', b'"user_id":7,"user_id":', 1),
        g[:-1] + b",}",
        g[:-1],
    ]


def _malformed_labels() -> list[bytes | None]:
    base = {
        "schema_version": 1,
        "transaction_id": "t1",
        "label_time": "2024-01-01T00:00:00.000000Z",
        "is_fraud": True,
        "fraud_type": "stolen_card",
    }

    def enc(**changes: object) -> bytes:
        return _mutate(json.dumps(base).encode(), **changes)

    return [
        enc(),
        enc(is_fraud=False, fraud_type=None),
        enc(fraud_type=_DROP),
        enc(is_fraud=1),
        enc(is_fraud="true"),
        enc(is_fraud=None),
        enc(is_fraud=_DROP),
        enc(fraud_type="bored"),
        enc(fraud_type=""),
        enc(label_time="2024-01-01"),
        enc(transaction_id=""),
    ]


@pytest.fixture(scope="module")
def simulation():
    return simulate(SimulationConfig(days=2, users=200, seed=1))


NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_transactions_mixed_with_malformed(simulation) -> None:
    good = [encode_event(t) for t in simulation.transactions][:2_000]
    assert len(good) >= 500
    bad = _malformed_transactions(good)
    payloads: list[bytes | None] = list(good)
    rng = random.Random(3)
    for payload in bad * 3:
        payloads.insert(rng.randrange(len(payloads) + 1), payload)
    _assert_same(TRANSACTIONS, payloads, NOW)
    _assert_same(TRANSACTIONS, bad, NOW)
    _assert_same(TRANSACTIONS, good, NOW)


def test_each_malformed_alone_and_in_good_company(simulation) -> None:
    good = [encode_event(t) for t in simulation.transactions][:200]
    for payload in _malformed_transactions(good):
        _assert_same(TRANSACTIONS, [payload], NOW)
        _assert_same(TRANSACTIONS, good[:100] + [payload] + good[100:], NOW)


def test_account_events_and_labels(simulation) -> None:
    events = [encode_event(e) for e in simulation.account_events][:1_000]
    events.append(_mutate(events[0], event_type="sneeze"))
    events.append(_mutate(events[1], event_type=None))
    _assert_same(ACCOUNT_EVENTS, events, NOW)
    labels = [encode_event(e) for e in simulation.labels][:500] + _malformed_labels()
    _assert_same(LABELS, labels, NOW)


def test_future_events_against_now(simulation) -> None:
    good = [encode_event(t) for t in simulation.transactions][:1_000]
    times = sorted(t["event_time"] for t in simulation.transactions[:1_000])
    now = times[len(times) // 2]  # half the events are more than the skew ahead
    _assert_same(TRANSACTIONS, good, now)
    _assert_same(TRANSACTIONS, good, now - timedelta(minutes=10))
    _assert_same(TRANSACTIONS, good, now.astimezone(UTC).replace(tzinfo=UTC))


def test_empty_batch() -> None:
    table, indices, rejects = validate_batch(TRANSACTIONS, [], NOW)
    assert table.num_rows == 0 and indices == [] and rejects == []
    assert table.schema == record_schema(TRANSACTIONS)


def test_valid_events_take_the_columnar_path(simulation, monkeypatch) -> None:
    import fraud_platform.lib.ingestion.batch_validation as batch_validation

    calls: list[bytes | None] = []

    def counting(contract: str, payload: bytes | None, now: datetime) -> dict:
        calls.append(payload)
        return validate_event(contract, payload, now)

    monkeypatch.setattr(batch_validation, "validate_event", counting)
    good = [encode_event(t) for t in simulation.transactions]
    table, indices, rejects = validate_batch(TRANSACTIONS, good + [b"oops"], NOW)
    assert (table.num_rows, len(indices), rejects[0][0]) == (len(good), len(good), len(good))
    assert calls == [b"oops"]  # only the reject went through the per-event path
    labels = [encode_event(e) for e in simulation.labels]
    accounts = [encode_event(e) for e in simulation.account_events]
    validate_batch(LABELS, labels, NOW)
    validate_batch(ACCOUNT_EVENTS, accounts, NOW)
    assert calls == [b"oops"]
