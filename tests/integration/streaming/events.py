"""Random contract-valid events for the stream tests and the benchmark (unique microseconds per
event, so ties never order equal timestamps)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, TRANSACTIONS

ACCOUNT_TYPES = ["login", "login_failed", "password_change", "device_added", "twofa_disabled"]


def random_events(
    seed: int, prefix: str, n: int, *, start: datetime, span: timedelta, users: int = 20
) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (topic, event) pairs in event-time order: ~80% transactions, the rest account
    events; entities are named after ``prefix`` (unique Redis keys per test)."""
    rng = random.Random(seed)
    span_us = int(span.total_seconds() * 1_000_000)
    offsets = sorted(rng.sample(range(span_us), n))
    out: list[tuple[str, dict[str, Any]]] = []
    for i, offset in enumerate(offsets):
        at = start + timedelta(microseconds=offset)
        user = f"{prefix}u{rng.randrange(users)}"
        device = f"{user}-d{rng.randrange(3)}"
        country = rng.choice(["DE", "DE", "FR", "NL"])
        if rng.random() < 0.8:
            channel = rng.choice(["ecommerce", "card_present", "p2p", "withdrawal", "deposit"])
            out.append(
                (
                    TRANSACTIONS,
                    {
                        "schema_version": 1,
                        "transaction_id": f"{prefix}t{i}",
                        "event_time": at,
                        "user_id": user,
                        "card_id": f"{user}-c{rng.randrange(2)}",
                        "merchant_id": f"{prefix}m{rng.randrange(max(users // 2, 1))}",
                        "merchant_category": "electronics",
                        "amount": round(rng.choice([rng.uniform(0.5, 5), rng.uniform(5, 900)]), 2),
                        "currency": "EUR",
                        "channel": channel,
                        "counterparty_id": (
                            f"{prefix}p{rng.randrange(max(users // 3, 1))}"
                            if channel == "p2p"
                            else None
                        ),
                        "device_id": device,
                        "ip": "10.0.0.1",
                        "country": country,
                    },
                )
            )
        else:
            out.append(
                (
                    ACCOUNT_EVENTS,
                    {
                        "schema_version": 1,
                        "event_id": f"{prefix}a{i}",
                        "event_time": at,
                        "user_id": user,
                        "event_type": rng.choice(ACCOUNT_TYPES),
                        "device_id": device,
                        "ip": "10.0.0.1",
                        "country": country,
                    },
                )
            )
    return out


def now_utc() -> datetime:
    return datetime.now(UTC)
