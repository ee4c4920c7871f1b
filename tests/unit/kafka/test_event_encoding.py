"""The wire encoding of events (``encode_event``, ``format_timestamp``)."""

import json
from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from fraud_platform.lib.contracts.events import encode_event, format_timestamp


def test_timestamps_are_utc_with_microseconds_and_z() -> None:
    berlin = timezone(timedelta(hours=1))
    assert format_timestamp(datetime(2026, 3, 1, 0, 30, tzinfo=berlin)) == (
        "2026-02-28T23:30:00.000000Z"
    )
    assert format_timestamp(datetime(2026, 3, 1, 12, 0, 0, 5, tzinfo=UTC)) == (
        "2026-03-01T12:00:00.000005Z"
    )


def test_encoding_is_compact_json_that_decodes_to_the_event() -> None:
    event = {
        "event_time": datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        "amount": 129.99,
        "score": np.float64(0.25),  # the decision log's scores may be numpy floats
        "counterparty_id": None,
        "is_fraud": True,
        "by_day": {1: 2},  # json.dumps wrote non-string keys as strings
    }
    encoded = encode_event(event)
    assert b" " not in encoded
    assert json.loads(encoded) == {
        "event_time": "2026-03-01T12:00:00.000000Z",
        "amount": 129.99,
        "score": 0.25,
        "counterparty_id": None,
        "is_fraud": True,
        "by_day": {"1": 2},
    }
