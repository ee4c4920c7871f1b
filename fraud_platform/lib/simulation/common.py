"""Shared plumbing of the simulator: named random streams, tokens, small distributions, and
the recorder every behaviour writes its events into."""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

from fraud_platform.lib.contracts.events import SCHEMA_VERSION

if TYPE_CHECKING:
    from fraud_platform.lib.simulation.world import Country, Merchant, User

DAY = timedelta(days=1)
T = TypeVar("T")

# Relative activity by local hour: quiet nights, lunch and evening peaks; weekends start later.
WEEKDAY_HOURS = (
    0.25,
    0.12,
    0.06,
    0.04,
    0.05,
    0.12,
    0.35,
    0.7,
    1.0,
    1.05,
    1.1,
    1.3,
    1.6,
    1.4,
    1.1,
    1.1,
    1.25,
    1.5,
    1.7,
    1.6,
    1.35,
    1.05,
    0.75,
    0.45,
)
WEEKEND_HOURS = (
    0.45,
    0.3,
    0.15,
    0.08,
    0.05,
    0.06,
    0.12,
    0.25,
    0.5,
    0.8,
    1.1,
    1.35,
    1.6,
    1.6,
    1.45,
    1.35,
    1.3,
    1.35,
    1.5,
    1.6,
    1.5,
    1.3,
    1.0,
    0.7,
)
_HOURS = tuple(range(24))


def stream(seed: int, *parts: object) -> random.Random:
    """An independent random stream named by ``parts``: same seed and name, same numbers.

    String seeds are hashed with SHA-512 by ``random``, so this is stable across processes.
    """
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def choose(rng: random.Random, population: Sequence[T], cum_weights: Sequence[float]) -> T:
    """``rng.choices(population, cum_weights=cum_weights)[0]``: the same draw and the same result
    (one ``random()``, the same bisection) without the list and the argument checks, on the
    simulator's hottest line (every event's time and channel)."""
    return population[bisect(cum_weights, rng.random() * cum_weights[-1], 0, len(population) - 1)]


def token(rng: random.Random, prefix: str, nbytes: int = 5) -> str:
    """An opaque random identifier such as ``dev_3fa91c02be``."""
    return f"{prefix}{rng.getrandbits(8 * nbytes):0{2 * nbytes}x}"


def poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth for small means, a rounded normal for large ones)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def ip_in(rng: random.Random, country: Country) -> str:
    """A random address of ``country``: its second octet is the country's index (a toy GeoIP)."""
    return f"10.{country.index}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def money(value: float) -> float:
    """An amount rounded to cents, never below 0.50."""
    return round(max(value, 0.5), 2)


def chargeback_delay_days(rng: random.Random) -> float:
    """Days until a fraud is reported: lognormal, median ~4 days, clipped to [1, 20]."""
    return min(20.0, max(1.0, rng.lognormvariate(math.log(4.0), 0.75)))


@lru_cache(maxsize=64)
def utc_hour_cum_weights(tz: int, weekend: bool) -> tuple[float, ...]:
    """Cumulative weights of UTC hours for someone living at UTC``tz``."""
    local = WEEKEND_HOURS if weekend else WEEKDAY_HOURS
    total, cum = 0.0, []
    for hour in _HOURS:
        total += local[(hour + tz) % 24]
        cum.append(total)
    return tuple(cum)


@dataclass
class Day:
    """One simulated UTC day and the random stream of whatever is being generated for it."""

    index: int
    start: datetime
    weekend: bool
    drifted: bool
    rng: random.Random

    def time_at(self, tz: int) -> datetime:
        """A random instant of this day, following the daily cycle of local time UTC``tz``."""
        rng = self.rng
        hour = choose(rng, _HOURS, utc_hour_cum_weights(tz, self.weekend))
        return self.start + timedelta(seconds=hour * 3600 + rng.random() * 3600)

    def before(self, time: datetime, seconds: float) -> datetime:
        """``seconds`` before ``time``, but not before this day: what a day generates stays
        in the day or later (so the days before a drift never change)."""
        return max(self.start, time - timedelta(seconds=seconds))


# A transaction as recorded: the event, its fraud type (None if legitimate) and, for frauds,
# the incident's chargeback delay in days.
Draft = tuple[dict[str, Any], str | None, float | None]


@dataclass
class Recorder:
    """Collects draft events; drops anything at or after the end of the simulation.

    A transaction draft is ``(event, fraud_type, label_after_days)``: the last two are the
    ground truth and, for frauds, the incident's chargeback delay.
    """

    end: datetime
    transactions: list[Draft] = field(default_factory=list)
    account_events: list[dict[str, Any]] = field(default_factory=list)
    # day -> merchant_id -> {(user index, card_id): None}: which cards paid where (an ordered set).
    card_history: dict[int, dict[str, dict[tuple[int, str], None]]] = field(default_factory=dict)

    def transaction(
        self,
        time: datetime,
        user: User,
        card: str,
        merchant: Merchant,
        amount: float,
        channel: str,
        device: str,
        ip: str,
        country: Country,
        *,
        counterparty: str | None = None,
        fraud: str | None = None,
        label_after: float | None = None,
    ) -> None:
        if time >= self.end:
            return
        event = {
            "schema_version": SCHEMA_VERSION,
            "transaction_id": "",
            "event_time": time,
            "user_id": user.user_id,
            "card_id": card,
            "merchant_id": merchant.merchant_id,
            "merchant_category": merchant.category,
            "amount": money(amount),
            "currency": user.currency,
            "channel": channel,
            "counterparty_id": counterparty,
            "device_id": device,
            "ip": ip,
            "country": country.code,
        }
        self.transactions.append((event, fraud, label_after))

    def account_event(
        self, time: datetime, user: User, event_type: str, device: str, ip: str, country: Country
    ) -> None:
        if time >= self.end:
            return
        self.account_events.append(
            {
                "schema_version": SCHEMA_VERSION,
                "event_id": "",
                "event_time": time,
                "user_id": user.user_id,
                "event_type": event_type,
                "device_id": device,
                "ip": ip,
                "country": country.code,
            }
        )

    def remember_card(self, day: int, merchant_id: str, user_index: int, card: str) -> None:
        """Note that ``card`` paid at ``merchant_id`` on ``day`` (for merchant breaches)."""
        self.card_history.setdefault(day, {}).setdefault(merchant_id, {})[(user_index, card)] = None

    def forget_cards_before(self, day: int) -> None:
        """Drop the card history of days before ``day`` (no breach looks back that far)."""
        for old in [d for d in self.card_history if d < day]:
            del self.card_history[old]
