"""``simulate``: the configuration, the day loop and the finished, sorted event lists."""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, LABELS, TRANSACTIONS
from fraud_platform.lib.simulation.common import Day, Draft, Recorder, stream
from fraud_platform.lib.simulation.drift import simulate_drift_fraud_day
from fraud_platform.lib.simulation.labels import make_labels
from fraud_platform.lib.simulation.ordinary import simulate_ordinary_day
from fraud_platform.lib.simulation.scenarios import BREACH_LOOKBACK_DAYS, simulate_fraud_day
from fraud_platform.lib.simulation.world import build_world

DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
REFERENCE_USERS = 2000  # fraud incident rates are given for this many users at rate 1
DEFAULT_CHUNK_DAYS = 7
GC_THRESHOLD_WHILE_SIMULATING = 100_000  # allocations between young collections


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
    identical with and without drift. The whole simulation in memory: for long or large runs
    use ``simulate_chunks`` (the concatenation of its chunks is this, byte for byte).
    """
    return concatenate(simulate_chunks(config, chunk_days=config.days))


def simulate_chunks(
    config: SimulationConfig, chunk_days: int = DEFAULT_CHUNK_DAYS
) -> Iterator[Simulation]:
    """The simulation of ``config`` in time order, ``chunk_days`` days at a time.

    A chunk holds the events whose time lies in its days (the last chunk also the labels that
    fall after the simulation's end); events a day generates for later days (a breached card
    used days after, a scam spread over days, a late label) wait for their chunk. No day
    generates an event before its own start, so a chunk is final once its days are generated,
    and memory stays at about one chunk of events whatever ``days`` is: measured at 5,000
    users, the whole year in memory held 7.8 GB.
    """
    if chunk_days < 1:
        raise ValueError("chunk_days must be >= 1")
    seed = config.seed
    start = config.start.astimezone(UTC)
    world = build_world(seed, config.users, config.merchants)
    rec = Recorder(end=start + timedelta(days=config.days))
    fraud_scale = config.users / REFERENCE_USERS * config.rate
    numbered = {TRANSACTIONS: 0, ACCOUNT_EVENTS: 0}
    drafts: list[Draft] = []  # transactions of later chunks, in the order they were recorded
    account_events: list[dict[str, Any]] = []
    labels: list[dict[str, Any]] = []

    def day_of(index: int, name: str) -> Day:
        day_start = start + timedelta(days=index)
        return Day(
            index=index,
            start=day_start,
            weekend=day_start.weekday() >= 5,
            drifted=config.drift_at is not None and index >= config.drift_at,
            rng=stream(seed, name, index),
        )

    for first in range(0, config.days, chunk_days):
        last = min(first + chunk_days, config.days)
        with _rare_collections():
            for index in range(first, last):
                simulate_ordinary_day(world, rec, seed, day_of(index, "ordinary"), config.rate)
                simulate_fraud_day(world, rec, lambda kind, i=index: day_of(i, kind), fraud_scale)
                simulate_drift_fraud_day(world, rec, day_of(index, "drift_fraud"), fraud_scale)
        rec.forget_cards_before(last - BREACH_LOOKBACK_DAYS)
        final = last == config.days
        until = start + timedelta(days=last)
        # pending ones first: a stable sort then orders ties as one sort of everything would
        drafts = sorted(drafts + rec.transactions, key=lambda draft: draft[0]["event_time"])
        account_events = sorted(account_events + rec.account_events, key=_event_time)
        rec.transactions, rec.account_events = [], []
        ready, drafts = _split(drafts, until, lambda draft: draft[0]["event_time"])
        ready_accounts, account_events = _split(account_events, until, _event_time)
        truth: dict[str, str] = {}
        for event, fraud_type, _ in ready:
            numbered[TRANSACTIONS] += 1
            event["transaction_id"] = f"t{seed}-{numbered[TRANSACTIONS]:08d}"
            if fraud_type is not None:
                truth[event["transaction_id"]] = fraud_type
        for event in ready_accounts:
            numbered[ACCOUNT_EVENTS] += 1
            event["event_id"] = f"a{seed}-{numbered[ACCOUNT_EVENTS]:08d}"
        # a chunk holds whole days, and each day's labels draw from that day's own stream
        labels = sorted(labels + make_labels(ready, seed, start), key=_label_time)
        ready_labels, labels = (labels, []) if final else _split(labels, until, _label_time)
        yield Simulation(
            transactions=[event for event, _, _ in ready],
            account_events=ready_accounts,
            labels=ready_labels,
            fraud_type_by_transaction=truth,
        )


@contextmanager
def _rare_collections() -> Iterator[None]:
    """A week of 50,000 users allocates ~1.8M event dicts that all stay alive: the cyclic
    garbage collector's default (a pass every 700 allocations) walks them again and again, ~10%
    of the time, for no garbage (the events hold no cycles). The caller's setting comes back
    before the chunk is handed over."""
    threshold = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_WHILE_SIMULATING, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def concatenate(chunks: Iterable[Simulation]) -> Simulation:
    """One simulation of consecutive chunks (``simulate_chunks``)."""
    whole = Simulation([], [], [], {})
    for chunk in chunks:
        whole.transactions += chunk.transactions
        whole.account_events += chunk.account_events
        whole.labels += chunk.labels
        whole.fraud_type_by_transaction |= chunk.fraud_type_by_transaction
    return whole


T = TypeVar("T")


def _split(
    items: list[T], until: datetime, time_of: Callable[[T], datetime]
) -> tuple[list[T], list[T]]:
    """Time-sorted ``items`` before ``until``, and the rest."""
    cut = bisect_left(items, until, key=time_of)
    return items[:cut], items[cut:]


def _event_time(event: dict[str, Any]) -> datetime:
    return event["event_time"]


def _label_time(label: dict[str, Any]) -> datetime:
    return label["label_time"]
