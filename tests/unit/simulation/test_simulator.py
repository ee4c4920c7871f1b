"""The traffic simulator: determinism, contracts, fraud realism, labels and drift."""

from __future__ import annotations

import hashlib
import os
import re
import statistics
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta

import pytest

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    EVENT_ID_FIELD,
    EVENT_TIME_FIELD,
    FRAUD_TYPES,
    LABELS,
    TRANSACTIONS,
    encode_event,
    validate_event,
)
from fraud_platform.lib.simulation import Simulation, SimulationConfig, simulate

SMALL = SimulationConfig(days=5, users=300, seed=7)
MEDIUM = SimulationConfig(days=14, users=1000, seed=3)
DRIFT_DAY = 5
PLAIN = SimulationConfig(days=10, users=600, seed=5)
DRIFTED = SimulationConfig(days=10, users=600, seed=5, drift_at=DRIFT_DAY)


@pytest.fixture(scope="module")
def small() -> Simulation:
    return simulate(SMALL)


@pytest.fixture(scope="module")
def medium() -> Simulation:
    return simulate(MEDIUM)


@pytest.fixture(scope="module")
def drift_pair() -> tuple[Simulation, Simulation]:
    return simulate(PLAIN), simulate(DRIFTED)


def _encoded(sim: Simulation) -> dict[str, list[bytes]]:
    return {topic: [encode_event(e) for e in evs] for topic, evs in sim.events_by_topic().items()}


def _fraud_rows(sim: Simulation) -> list[tuple[dict, str]]:
    truth = sim.fraud_type_by_transaction
    return [(t, truth[t["transaction_id"]]) for t in sim.transactions
            if t["transaction_id"] in truth]  # fmt: skip


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(small: Simulation) -> None:
    again = simulate(SMALL)
    assert _encoded(again) == _encoded(small)
    assert again.fraud_type_by_transaction == small.fraud_type_by_transaction


def test_different_seed_differs(small: Simulation) -> None:
    other = simulate(SimulationConfig(days=5, users=300, seed=8))
    assert _encoded(other)[TRANSACTIONS] != _encoded(small)[TRANSACTIONS]


def test_deterministic_across_processes_with_different_hash_seeds(small: Simulation) -> None:
    """No hidden dependence on set/str-hash ordering (PYTHONHASHSEED)."""
    digest = hashlib.sha256()
    for events in _encoded(small).values():
        for payload in events:
            digest.update(payload)
    code = (
        "import hashlib\n"
        "from fraud_platform.lib.contracts.events import encode_event\n"
        "from fraud_platform.lib.simulation import SimulationConfig, simulate\n"
        "sim = simulate(SimulationConfig(days=5, users=300, seed=7))\n"
        "h = hashlib.sha256()\n"
        "for events in sim.events_by_topic().values():\n"
        "    for e in events:\n"
        "        h.update(encode_event(e))\n"
        "print(h.hexdigest())\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert out.stdout.strip() == digest.hexdigest()


# --- contracts -----------------------------------------------------------------------------


def test_every_event_validates_against_its_contract(small: Simulation) -> None:
    latest_label = max(label["label_time"] for label in small.labels)
    for topic, events in small.events_by_topic().items():
        now = SMALL.start + timedelta(days=SMALL.days) if topic != LABELS else latest_label
        assert events, topic
        for event in events:
            validate_event(topic, encode_event(event), now=now)


def test_field_conventions(small: Simulation) -> None:
    ip = re.compile(r"^10\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
    for t in small.transactions:
        assert t["card_id"].startswith("card_") and not t["card_id"][5:].isdigit()
        assert ip.match(t["ip"]) and re.fullmatch(r"[A-Z]{2}", t["country"])
        assert t["currency"] in {"EUR", "GBP", "USD"}
        assert t["event_time"].tzinfo is not None and t["amount"] > 0
        if t["channel"] == "p2p":
            assert t["counterparty_id"] and t["counterparty_id"] != t["user_id"]
        else:
            assert t["counterparty_id"] is None
    for e in small.account_events:
        assert ip.match(e["ip"]) and re.fullmatch(r"[A-Z]{2}", e["country"])


def test_events_lie_in_the_simulated_period_and_are_sorted(small: Simulation) -> None:
    end = SMALL.start + timedelta(days=SMALL.days)
    for topic, events in small.events_by_topic().items():
        times = [e[EVENT_TIME_FIELD[topic]] for e in events]
        assert times == sorted(times), topic
        if topic != LABELS:
            assert SMALL.start <= times[0] and times[-1] < end


def test_ids_are_unique_and_labels_point_at_transactions(medium: Simulation) -> None:
    for topic, events in medium.events_by_topic().items():
        ids = [e[EVENT_ID_FIELD[topic]] for e in events]
        assert len(ids) == len(set(ids)), topic
    transaction_ids = {t["transaction_id"] for t in medium.transactions}
    assert {label["transaction_id"] for label in medium.labels} <= transaction_ids
    assert set(medium.fraud_type_by_transaction) <= transaction_ids


def test_naive_start_is_rejected() -> None:
    with pytest.raises(ValueError):
        SimulationConfig(start=datetime(2026, 10, 1))


# --- volume and fraud realism --------------------------------------------------------------


def test_volume_scales_with_users_and_rate(small: Simulation) -> None:
    per_user_day = len(small.transactions) / (SMALL.users * SMALL.days)
    assert 2.5 < per_user_day < 4.5
    doubled = simulate(SimulationConfig(days=5, users=300, seed=7, rate=2.0))
    assert 1.8 < len(doubled.transactions) / len(small.transactions) < 2.2


def test_fraud_rate_and_all_five_types(medium: Simulation) -> None:
    rate = len(medium.fraud_type_by_transaction) / len(medium.transactions)
    assert 0.005 <= rate <= 0.02
    assert set(medium.fraud_type_by_transaction.values()) == FRAUD_TYPES


def test_fraud_signatures(medium: Simulation) -> None:
    by_type: dict[str, list[dict]] = {}
    for t, fraud_type in _fraud_rows(medium):
        by_type.setdefault(fraud_type, []).append(t)
    testing = by_type["card_testing"]
    assert {t["channel"] for t in testing} == {"ecommerce"}
    assert sum(t["amount"] < 5 for t in testing) / len(testing) > 0.8
    assert {t["channel"] for t in by_type["account_takeover"]} <= {"withdrawal", "p2p"}
    assert {t["channel"] for t in by_type["p2p_scam"]} == {"p2p"}
    assert {t["channel"] for t in by_type["compromised_merchant"]} == {"ecommerce"}
    legit = [t["amount"] for t in medium.transactions
             if t["transaction_id"] not in medium.fraud_type_by_transaction]  # fmt: skip
    for fraud_type in ("account_takeover", "stolen_card", "compromised_merchant"):
        amounts = [t["amount"] for t in by_type[fraud_type]]
        assert statistics.median(amounts) > 2 * statistics.median(legit), fraud_type


def test_account_takeover_is_preceded_by_a_login_from_its_device(medium: Simulation) -> None:
    logins = {(e["user_id"], e["device_id"]) for e in medium.account_events
              if e["event_type"] == "login"}  # fmt: skip
    takeovers = [t for t, kind in _fraud_rows(medium) if kind == "account_takeover"]
    assert takeovers and all((t["user_id"], t["device_id"]) in logins for t in takeovers)


def test_security_events_are_not_fraud_proof(medium: Simulation) -> None:
    """Legitimate users change passwords, add devices and payout addresses too."""
    fraud_users = {t["user_id"] for t, kind in _fraud_rows(medium) if kind == "account_takeover"}
    legit_changes = Counter(e["event_type"] for e in medium.account_events
                            if e["user_id"] not in fraud_users)  # fmt: skip
    for kind in ("password_change", "device_added", "withdrawal_address_added", "login_failed"):
        assert legit_changes[kind] > 0, kind


def test_p2p_scam_amounts_grow_towards_one_mule(medium: Simulation) -> None:
    transfers: dict[tuple[str, str], list[float]] = {}
    for t, kind in _fraud_rows(medium):
        if kind == "p2p_scam":
            transfers.setdefault((t["user_id"], t["counterparty_id"]), []).append(t["amount"])
    multi = [amounts for amounts in transfers.values() if len(amounts) > 1]
    assert multi and all(a == sorted(a) for a in multi)


# --- labels --------------------------------------------------------------------------------


def test_labels_arrive_late(medium: Simulation) -> None:
    event_time = {t["transaction_id"]: t["event_time"] for t in medium.transactions}
    delays = {True: [], False: []}
    for label in medium.labels:
        delay = label["label_time"] - event_time[label["transaction_id"]]
        assert delay > timedelta(0)
        delays[label["is_fraud"]].append(delay.total_seconds() / 86400)
    assert statistics.median(delays[True]) > 1
    assert 1 <= min(delays[True]) and max(delays[True]) <= 20
    assert 1 <= min(delays[False]) and max(delays[False]) <= 7
    assert any(label["label_time"] >= MEDIUM.end for label in medium.labels)  # late labels kept


def test_label_coverage(medium: Simulation) -> None:
    truth = medium.fraud_type_by_transaction
    found = {lab["transaction_id"]: lab for lab in medium.labels if lab["transaction_id"] in truth}
    assert 0.8 < len(found) / len(truth) < 0.97  # ~10% never reported
    assert all(lab["is_fraud"] and lab["fraud_type"] == truth[tid] for tid, lab in found.items())
    reviewed = [lab for lab in medium.labels if not lab["is_fraud"]]
    assert all(lab["fraud_type"] is None and lab["transaction_id"] not in truth for lab in reviewed)
    share = len(reviewed) / (len(medium.transactions) - len(truth))
    assert 0.02 < share < 0.04


# --- drift ---------------------------------------------------------------------------------


Pair = tuple[Simulation, Simulation]


def test_drift_leaves_the_days_before_it_identical(drift_pair: Pair) -> None:
    plain, drifted = drift_pair
    cut = PLAIN.start + timedelta(days=DRIFT_DAY)
    for topic in (TRANSACTIONS, ACCOUNT_EVENTS, LABELS):
        field = EVENT_TIME_FIELD[topic]
        before = [
            [encode_event(e) for e in sim.events_by_topic()[topic] if e[field] < cut]
            for sim in (plain, drifted)
        ]
        assert before[0] and before[0] == before[1], topic
    assert _encoded(plain) != _encoded(drifted)


def test_drift_changes_the_fraud_mix_and_behaviour(drift_pair: Pair) -> None:
    cut = PLAIN.start + timedelta(days=DRIFT_DAY)

    def after(sim: Simulation) -> tuple[Counter, float, float]:
        mix = Counter(kind for t, kind in _fraud_rows(sim) if t["event_time"] >= cut)
        legit = [t for t in sim.transactions if t["event_time"] >= cut
                 and t["transaction_id"] not in sim.fraud_type_by_transaction]  # fmt: skip
        shop = [t["amount"] for t in legit if t["channel"] == "card_present"]
        online = sum(t["channel"] == "ecommerce" for t in legit) / len(legit)
        return mix, statistics.mean(shop), online

    plain_mix, plain_amount, plain_online = after(drift_pair[0])
    drift_mix, drift_amount, drift_online = after(drift_pair[1])

    def share(mix: Counter, *kinds: str) -> float:
        return sum(mix[k] for k in kinds) / sum(mix.values())

    assert (
        share(drift_mix, "p2p_scam", "account_takeover")
        > share(plain_mix, "p2p_scam", "account_takeover") + 0.1
    )
    assert drift_amount > 1.15 * plain_amount
    assert drift_online > plain_online + 0.05


def test_drift_brings_new_fraud_countries(drift_pair: Pair) -> None:
    cut = DRIFTED.start + timedelta(days=DRIFT_DAY)
    plain, drifted = ({t["country"] for t, _ in _fraud_rows(sim) if t["event_time"] >= cut}
                      for sim in drift_pair)  # fmt: skip
    assert drifted - plain
