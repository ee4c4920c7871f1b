"""``simulate``: the configuration, the day loop and the finished, sorted event lists."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, LABELS, TRANSACTIONS
from fraud_platform.lib.simulation.common import Day, Recorder, stream
from fraud_platform.lib.simulation.drift import simulate_drift_fraud_day
from fraud_platform.lib.simulation.labels import make_labels
from fraud_platform.lib.simulation.ordinary import simulate_ordinary_day
from fraud_platform.lib.simulation.scenarios import simulate_fraud_day
from fraud_platform.lib.simulation.world import build_world

DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
REFERENCE_USERS = 2000  # fraud incident rates are given for this many users at rate 1


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. ``rate`` and ``users`` scale volume linearly (frauds included, so the
    fraud share stays ~1%); from day index ``drift_at`` on, behaviour and fraud mix shift."""

    days: int = 30
    users: int = 2000
    seed: int = 7
    rate: float = 1.0
    drift_at: int | None = None
    start: datetime = DEFAULT_START
    merchants: int = 400

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("SimulationConfig.start must be timezone-aware (UTC)")
        if self.days < 1 or self.users < 2 or self.merchants < 1 or not self.rate > 0:
            raise ValueError("need days >= 1, users >= 2, merchants >= 1 and rate > 0")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


@dataclass
class Simulation:
    """The generated events, each list sorted by its time, plus the ground truth."""

    transactions: list[dict[str, Any]]
    account_events: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    fraud_type_by_transaction: dict[str, str]

    def events_by_topic(self) -> dict[str, list[dict[str, Any]]]:
        return {
            TRANSACTIONS: self.transactions,
            ACCOUNT_EVENTS: self.account_events,
            LABELS: self.labels,
        }


def simulate(config: SimulationConfig) -> Simulation:
    """Generate the traffic of ``config``: pure and deterministic for a seed.

    Every day draws from its own named random streams, so days before ``drift_at`` are
    identical with and without drift.
    """
    seed = config.seed
    start = config.start.astimezone(UTC)
    world = build_world(seed, config.users, config.merchants)
    rec = Recorder(end=start + timedelta(days=config.days))
    fraud_scale = config.users / REFERENCE_USERS * config.rate

    def day_of(index: int, name: str) -> Day:
        day_start = start + timedelta(days=index)
        return Day(
            index=index,
            start=day_start,
            weekend=day_start.weekday() >= 5,
            drifted=config.drift_at is not None and index >= config.drift_at,
            rng=stream(seed, name, index),
        )

    for index in range(config.days):
        simulate_ordinary_day(world, rec, seed, day_of(index, "ordinary"), config.rate)
        simulate_fraud_day(world, rec, lambda kind, i=index: day_of(i, kind), fraud_scale)
        simulate_drift_fraud_day(world, rec, day_of(index, "drift_fraud"), fraud_scale)

    drafts = sorted(rec.transactions, key=lambda draft: draft[0]["event_time"])
    truth: dict[str, str] = {}
    for n, (event, fraud_type, _) in enumerate(drafts, start=1):
        event["transaction_id"] = f"t{seed}-{n:08d}"
        if fraud_type is not None:
            truth[event["transaction_id"]] = fraud_type
    account_events = sorted(rec.account_events, key=lambda event: event["event_time"])
    for n, event in enumerate(account_events, start=1):
        event["event_id"] = f"a{seed}-{n:08d}"
    return Simulation(
        transactions=[event for event, _, _ in drafts],
        account_events=account_events,
        labels=make_labels(drafts, seed, start),
        fraud_type_by_transaction=truth,
    )
