"""Labels, as the business learns them: chargebacks days after a fraud, and reviews.

* A fraud is labelled ``is_fraud=True`` with its type after its incident's chargeback delay
  (median ~4 days) plus a few hours, 1-20 days in all; ~10% of frauds are never reported.
* ~3% of legitimate transactions are reviewed and labelled ``is_fraud=False`` within 1-7 days.
* A handful (0.02%) of legitimate transactions are disputed anyway: false-positive chargebacks
  labelled ``is_fraud=True, fraud_type="stolen_card"`` (they are not in the ground truth).

Labels may fall after the end of the simulation; ``publish`` filters them by time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fraud_platform.lib.contracts.events import SCHEMA_VERSION
from fraud_platform.lib.simulation.common import chargeback_delay_days, stream

UNREPORTED_SHARE = 0.10
REVIEWED_SHARE = 0.03
DISPUTED_SHARE = 0.0002


def label(transaction_id: str, time: datetime, is_fraud: bool, fraud_type: str | None) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "transaction_id": transaction_id,
        "label_time": time,
        "is_fraud": is_fraud,
        "fraud_type": fraud_type,
    }


def make_labels(
    drafts: list[tuple[dict[str, Any], str | None, float | None]], seed: int, start: datetime
) -> list[dict[str, Any]]:
    """Labels of time-sorted transaction drafts; each UTC day draws from its own stream."""
    labels: list[dict[str, Any]] = []
    rng, current_day = None, None
    for event, fraud_type, label_after in drafts:
        time: datetime = event["event_time"]
        day = (time - start).days
        if day != current_day:
            rng, current_day = stream(seed, "labels", day), day
        assert rng is not None
        roll = rng.random()
        if fraud_type is not None:
            if roll >= UNREPORTED_SHARE:
                days = min(20.0, (label_after or 4.0) + rng.uniform(0, 8) / 24)
                delay = timedelta(days=days)
                labels.append(label(event["transaction_id"], time + delay, True, fraud_type))
        elif roll < REVIEWED_SHARE:
            delay = timedelta(days=rng.uniform(1, 7))
            labels.append(label(event["transaction_id"], time + delay, False, None))
        elif roll < REVIEWED_SHARE + DISPUTED_SHARE:
            delay = timedelta(days=chargeback_delay_days(rng))
            labels.append(label(event["transaction_id"], time + delay, True, "stolen_card"))
    labels.sort(key=lambda row: row["label_time"])
    return labels
