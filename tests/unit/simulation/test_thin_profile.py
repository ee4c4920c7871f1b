"""The simulator's thin profile: only card, terminal, amount and time; a terminal-compromise
scenario; labels 7 days late; contract-valid events with defaults for the other fields."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.contracts.events import (
    EVENT_FIELDS,
    LABELS,
    TRANSACTIONS,
    encode_event,
    validate_event,
)
from fraud_platform.lib.simulation.thin import (
    CONTRACT_DEFAULTS,
    THIN_TRANSACTION_FIELDS,
    Payments,
    ThinConfig,
    compromise_terminal,
    contract_events,
    simulate_thin,
)

SMALL = ThinConfig(days=40, cards=300, terminals=150, seed=3)


@pytest.fixture(scope="module")
def simulation():
    return simulate_thin(SMALL)


def test_thin_profile_emits_only_the_thin_fields(simulation) -> None:
    assert tuple(simulation.transactions.columns) == THIN_TRANSACTION_FIELDS
    assert simulation.transactions["transaction_id"].is_unique().all()
    assert simulation.transactions["event_time"].is_sorted()
    assert (simulation.transactions["amount"] > 0).all()
    thin = set(THIN_TRANSACTION_FIELDS) | {"schema_version"}
    contract = simulation.contract_transactions()
    others = {f.name for f in EVENT_FIELDS[TRANSACTIONS]} - thin
    assert others == set(CONTRACT_DEFAULTS)
    for name in others:  # every other field holds its contract default, nothing else
        assert contract[name].unique().to_list() == [CONTRACT_DEFAULTS[name]]


def test_thin_profile_events_pass_the_contract(simulation) -> None:
    events = contract_events(simulation)
    assert events["account_events"] == []
    now = simulation.config.start + timedelta(days=400)
    for event in events["transactions"][:500]:
        validate_event(TRANSACTIONS, encode_event(event), now=now)
    for event in events["labels"][:200]:
        validate_event(LABELS, encode_event(event), now=now)


def test_thin_profile_labels_frauds_seven_days_later(simulation) -> None:
    labels = simulation.labels.join(
        simulation.transactions.select("transaction_id", "event_time"), on="transaction_id"
    )
    assert labels.height == simulation.labels.height > 0
    delay = (labels["label_time"] - labels["event_time"]).dt.total_seconds()
    assert delay.min() >= 7 * 86_400 and delay.max() <= 7 * 86_400 + 3_600
    assert labels["is_fraud"].all()
    assert set(labels["fraud_type"].unique()) == {"compromised_merchant", "stolen_card"}


def test_thin_profile_is_deterministic_per_config() -> None:
    config = ThinConfig(days=5, cards=50, terminals=20, seed=9)
    first, second = simulate_thin(config), simulate_thin(config)
    assert first.transactions.equals(second.transactions)
    assert first.labels.equals(second.labels)


def _payments() -> Payments:
    # terminal 1: one payment an hour for 10 days; terminal 2: the same hours
    hours = np.arange(240, dtype=float) * 3600
    seconds = np.concatenate([hours, hours])
    terminal = np.repeat([1, 2], hours.size)
    n = seconds.size
    return Payments(seconds, np.zeros(n, int), terminal, np.ones(n), np.full(n, "", dtype=object))


def test_compromised_terminal_turns_its_payments_in_the_period_into_fraud() -> None:
    payments = _payments()
    start, end = 2 * 86_400.0, 5 * 86_400.0
    chosen = compromise_terminal(payments, 1, start, end, 1.0, np.random.default_rng(0))
    fraud = payments.fraud_type == "compromised_merchant"
    expected = (payments.terminal == 1) & (payments.seconds >= start) & (payments.seconds < end)
    assert np.array_equal(fraud, expected) and chosen.size == 72  # 3 days x 24 payments


def test_compromised_terminal_makes_a_share_of_its_payments_fraud() -> None:
    payments = _payments()
    start, end = 0.0, 10 * 86_400.0
    compromise_terminal(payments, 2, start, end, 0.5, np.random.default_rng(1))
    fraud = payments.fraud_type == "compromised_merchant"
    assert not fraud[payments.terminal == 1].any()
    share = fraud[payments.terminal == 2].mean()
    assert 0.4 < share < 0.6  # 240 draws of p=0.5: outside this range has p < 0.002


def test_terminal_compromise_scenario_alone_makes_only_terminal_frauds() -> None:
    config = ThinConfig(days=60, cards=400, terminals=200, seed=5, card_compromises_per_day=0.0)
    simulation = simulate_thin(config)
    frauds = simulation.labels.join(simulation.transactions, on="transaction_id")
    assert frauds.height > 0
    assert frauds["fraud_type"].unique().to_list() == ["compromised_merchant"]
    # each terminal's frauds fall in periods of compromise_days (possibly overlapping ones)
    per_terminal = frauds.group_by("merchant_id").agg(
        span=(pl.col("event_time").max() - pl.col("event_time").min()).dt.total_days(),
        frauds=pl.len(),
    )
    assert per_terminal.height > 1
    busiest = per_terminal.sort("frauds", descending=True).row(0, named=True)
    assert busiest["span"] < 3 * config.compromise_days
