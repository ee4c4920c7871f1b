"""The ``thin`` profile: card payments with only card (and its holder), terminal, amount and time,
as a team's own card-transaction history often has them; fraud labels 7 days later.

Vectorised (numpy, one generator seeded by ``seed``), so a million transactions take seconds.
Deterministic per configuration.

* **World.** Cards have a home point on a 100 x 100 map, a usual amount (mean ~U(5, 100),
  standard deviation half of it) and a rate (~U(0, 4) transactions a day). Terminals are
  points on the same map; each card pays at its ``usual_terminals`` nearest terminals.
* **Ordinary days.** A Poisson number of payments per card and day, at a random time of the
  day, at one of its terminals, amount ~ normal(mean, std) floored at 0.01.
* **Scenarios** (``THIN_SCENARIOS``: name -> (fraud type, incidents per day per 1000 cards,
  function), like ``scenarios.INCIDENTS_PER_DAY``):

  - ``terminal_compromise`` (``compromised_merchant``): a terminal is compromised for
    ``compromise_days``; a share ``compromise_share`` of its payments in that period are fraud
    (their amounts unchanged: only the terminal's fraud rate tells them apart);
  - ``card_compromise`` (``stolen_card``): a card's details leak; in the next
    ``card_compromise_days``, a third of its payments are fraud with ~5x its usual amount.

* **Labels.** Every fraud is labelled ``is_fraud=True`` ``label_delay_days`` after it happened
  (plus up to an hour); legitimate payments are not labelled (matured and unlabelled counts as
  legitimate, as in the platform's training set).

The contract fields the profile does not have take ``CONTRACT_DEFAULTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.contracts.events import SCHEMA_VERSION

THIN_TRANSACTION_FIELDS = (
    "transaction_id",
    "event_time",
    "user_id",
    "card_id",
    "merchant_id",
    "amount",
)
THIN_LABEL_FIELDS = ("transaction_id", "label_time", "is_fraud", "fraud_type")
# What the transactions contract gets for the fields thin data lacks.
CONTRACT_DEFAULTS: dict[str, Any] = {
    "merchant_category": "unknown",
    "currency": "EUR",
    "channel": "card_present",
    "counterparty_id": None,
    "device_id": "unknown",
    "ip": "0.0.0.0",
    "country": "ZZ",
}
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class ThinConfig:
    days: int = 180
    cards: int = 3000
    terminals: int = 2000
    seed: int = 7
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    usual_terminals: int = 8
    compromise_days: int = 28
    compromise_share: float = 0.5
    card_compromise_days: int = 14
    label_delay_days: float = 7.0
    terminal_compromises_per_day: float = 0.6  # per 1000 cards
    card_compromises_per_day: float = 0.9  # per 1000 cards

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("ThinConfig.start must be timezone-aware (UTC)")
        if self.days < 1 or self.cards < 2 or self.terminals < self.usual_terminals:
            raise ValueError("need days >= 1, cards >= 2, terminals >= usual_terminals")
        if not 0 < self.compromise_share <= 1:
            raise ValueError("compromise_share must be in (0, 1]")


@dataclass(frozen=True)
class ThinSimulation:
    """Transactions (thin fields) and labels, each sorted by its time."""

    transactions: pl.DataFrame
    labels: pl.DataFrame
    config: ThinConfig

    def contract_transactions(self) -> pl.DataFrame:
        """The transactions with every contract field (``CONTRACT_DEFAULTS`` for the others)."""
        return self.transactions.with_columns(
            pl.lit(SCHEMA_VERSION).alias("schema_version"),
            *(
                pl.lit(value, dtype=pl.String).alias(name)
                for name, value in CONTRACT_DEFAULTS.items()
            ),
        )


@dataclass
class Payments:
    """The ordinary payments, as columns, while scenarios mark some of them as fraud."""

    seconds: np.ndarray  # since start
    card: np.ndarray
    terminal: np.ndarray
    amount: np.ndarray
    fraud_type: np.ndarray  # "" = legitimate


def _world(config: ThinConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    card_xy = rng.uniform(0, 100, size=(config.cards, 2))
    terminal_xy = rng.uniform(0, 100, size=(config.terminals, 2))
    distance = np.linalg.norm(card_xy[:, None, :] - terminal_xy[None, :, :], axis=2)
    usual = np.argsort(distance, axis=1)[:, : config.usual_terminals]
    mean = rng.uniform(5, 100, size=config.cards)
    return {
        "usual": usual,
        "mean": mean,
        "std": mean / 2,
        "rate": rng.uniform(0, 4, size=config.cards),
    }


def _ordinary(
    config: ThinConfig, world: dict[str, np.ndarray], rng: np.random.Generator
) -> Payments:
    counts = rng.poisson(np.outer(np.ones(config.days), world["rate"]))  # days x cards
    day, card = np.nonzero(counts)
    repeats = counts[day, card]
    day, card = np.repeat(day, repeats), np.repeat(card, repeats)
    n = card.size
    seconds = day * DAY_SECONDS + rng.uniform(0, DAY_SECONDS, size=n)
    terminal = world["usual"][card, rng.integers(0, config.usual_terminals, size=n)]
    amount = np.maximum(rng.normal(world["mean"][card], world["std"][card]), 0.01)
    return Payments(seconds, card, terminal, np.round(amount, 2), np.full(n, "", dtype=object))


def _incidents(config: ThinConfig, per_day: float, rng: np.random.Generator) -> np.ndarray:
    """Start day of each incident: Poisson(per_day x cards / 1000) a day."""
    counts = rng.poisson(per_day * config.cards / 1000, size=config.days)
    return np.repeat(np.arange(config.days), counts)


def compromise_terminal(
    payments: Payments,
    terminal: int,
    start_s: float,
    end_s: float,
    share: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Mark a share of the terminal's payments in ``[start_s, end_s)`` as
    ``compromised_merchant`` fraud; returns their indices."""
    hit = np.flatnonzero(
        (payments.terminal == terminal) & (payments.seconds >= start_s) & (payments.seconds < end_s)
    )
    chosen = hit[rng.random(hit.size) < share]
    payments.fraud_type[chosen] = "compromised_merchant"
    return chosen


def terminal_compromise(config: ThinConfig, payments: Payments, rng: np.random.Generator) -> None:
    for start_day in _incidents(config, config.terminal_compromises_per_day, rng):
        start = float(start_day * DAY_SECONDS)
        end = start + config.compromise_days * DAY_SECONDS
        terminal = int(rng.integers(0, config.terminals))
        compromise_terminal(payments, terminal, start, end, config.compromise_share, rng)


def card_compromise(config: ThinConfig, payments: Payments, rng: np.random.Generator) -> None:
    for start_day in _incidents(config, config.card_compromises_per_day, rng):
        card = rng.integers(0, config.cards)
        start = start_day * DAY_SECONDS
        end = start + config.card_compromise_days * DAY_SECONDS
        hit = np.flatnonzero(
            (payments.card == card) & (payments.seconds >= start) & (payments.seconds < end)
        )
        chosen = hit[rng.random(hit.size) < 1 / 3]
        chosen = chosen[payments.fraud_type[chosen] == ""]
        payments.amount[chosen] = np.round(
            payments.amount[chosen] * rng.uniform(4, 6, chosen.size), 2
        )
        payments.fraud_type[chosen] = "stolen_card"


Scenario = Callable[[ThinConfig, Payments, np.random.Generator], None]
THIN_SCENARIOS: dict[str, Scenario] = {
    "terminal_compromise": terminal_compromise,
    "card_compromise": card_compromise,
}


def simulate_thin(config: ThinConfig) -> ThinSimulation:
    """Generate the thin profile's transactions and labels (module doc); pure per config."""
    rng = np.random.default_rng(config.seed)
    world = _world(config, rng)
    payments = _ordinary(config, world, rng)
    for name in THIN_SCENARIOS:
        THIN_SCENARIOS[name](config, payments, np.random.default_rng([config.seed, len(name)]))
    order = np.argsort(payments.seconds, kind="stable")
    start_us = int(config.start.timestamp() * 1_000_000)
    micros = (payments.seconds[order] * 1_000_000).astype(np.int64) + start_us
    card = payments.card[order]
    fraud_type = payments.fraud_type[order]
    n = order.size
    transactions = pl.DataFrame(
        {
            "transaction_id": [f"t{config.seed}-{i:09d}" for i in range(1, n + 1)],
            "event_time": pl.Series(micros).cast(pl.Datetime("us", "UTC")),
            "card": card,
            "terminal": payments.terminal[order],
            "amount": payments.amount[order],
        }
    ).select(
        "transaction_id",
        "event_time",
        pl.format("u{}", "card").alias("user_id"),
        pl.format("c{}", "card").alias("card_id"),
        pl.format("m{}", "terminal").alias("merchant_id"),
        "amount",
    )
    frauds = np.flatnonzero(fraud_type != "")
    delay_us = (
        config.label_delay_days * DAY_SECONDS + rng.uniform(0, 3600, size=frauds.size)
    ) * 1_000_000
    labels = pl.DataFrame(
        {
            "transaction_id": transactions["transaction_id"].gather(frauds),
            "label_time": pl.Series(micros[frauds] + delay_us.astype(np.int64)).cast(
                pl.Datetime("us", "UTC")
            ),
            "is_fraud": np.ones(frauds.size, dtype=bool),
            "fraud_type": pl.Series(fraud_type[frauds].astype(str), dtype=pl.String),
        }
    ).sort("label_time")
    return ThinSimulation(transactions=transactions, labels=labels, config=config)


def contract_events(
    simulation: ThinSimulation, end: datetime | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Per topic, the events as contract records (transactions with ``CONTRACT_DEFAULTS``,
    labels before ``end`` when given), for publishing through Kafka."""
    labels = simulation.labels
    if end is not None:
        labels = labels.filter(pl.col("label_time") < end)
    return {
        "transactions": simulation.contract_transactions().to_dicts(),
        "account_events": [],
        "labels": labels.with_columns(pl.lit(SCHEMA_VERSION).alias("schema_version")).to_dicts(),
    }


__all__ = [
    "CONTRACT_DEFAULTS",
    "THIN_LABEL_FIELDS",
    "THIN_SCENARIOS",
    "THIN_TRANSACTION_FIELDS",
    "Payments",
    "compromise_terminal",
    "ThinConfig",
    "ThinSimulation",
    "contract_events",
    "simulate_thin",
]
