"""The produce helper's message building: values in the wire encoding, keys per topic contract."""

from __future__ import annotations

import json

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, LABELS, TRANSACTIONS
from fraud_platform.lib.kafka.producer import event_messages
from fraud_platform.lib.simulation import SimulationConfig, simulate


def test_event_messages_key_each_topic_by_its_contract_key_field() -> None:
    simulation = simulate(SimulationConfig(days=2, users=30, seed=3))
    txn = simulation.transactions[0]
    account = simulation.account_events[0]
    label = simulation.labels[0]
    pairs = [(TRANSACTIONS, txn), (ACCOUNT_EVENTS, account), (LABELS, label)]

    messages = list(event_messages(pairs))

    assert [m.key for m in messages] == [
        txn["user_id"].encode(),
        account["user_id"].encode(),
        label["transaction_id"].encode(),
    ]
    assert [m.topic for m in messages] == [TRANSACTIONS, ACCOUNT_EVENTS, LABELS]
    assert all(m.partition is None for m in messages)
    assert json.loads(messages[0].value)["transaction_id"] == txn["transaction_id"]
    assert json.loads(messages[0].value)["event_time"].endswith("Z")
