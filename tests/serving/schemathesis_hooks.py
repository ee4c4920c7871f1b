"""schemathesis hooks for the scoring service's fuzz run (loaded via ``SCHEMATHESIS_HOOKS``).

The contract takes event times from ``EARLIEST_EVENT_TIME`` up to ``MAX_FUTURE_SKEW`` ahead of
the server's clock. A JSON schema cannot state a bound relative to now, so the published schema
says it in the description and the fuzzer draws ``date-time`` values inside that window, with
offsets up to the +/-14:00 extremes (times outside it are bad-input cases of their own, in
``test_bad_input.py``). Everything else is generated from ``/docs.json`` as published.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import schemathesis
from hypothesis import strategies as st

from fraud_platform.lib.contracts.events import EARLIEST_EVENT_TIME

OFFSETS = [
    timedelta(hours=h, minutes=m) for h, m in ((-14, 0), (-5, -30), (0, 0), (5, 45), (14, 0))
]
MARGIN = timedelta(days=1)  # local wall-clock bounds stay inside the window whatever the offset


def _event_times() -> st.SearchStrategy[str]:
    earliest = (EARLIEST_EVENT_TIME + MARGIN).replace(tzinfo=None)
    latest = (datetime.now(UTC) - MARGIN).replace(tzinfo=None)
    zones = st.sampled_from([timezone(offset) for offset in OFFSETS])
    return st.datetimes(min_value=earliest, max_value=latest, timezones=zones).map(
        lambda value: value.isoformat().replace("+00:00", "Z")
    )


schemathesis.openapi.format("date-time", _event_times())
