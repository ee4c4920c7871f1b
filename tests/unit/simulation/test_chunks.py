"""The simulation streamed a few days at a time: the same events as the whole run, in order."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fraud_platform.lib.contracts.events import EVENT_TIME_FIELD, LABELS, encode_event
from fraud_platform.lib.simulation import (
    Simulation,
    SimulationConfig,
    concatenate,
    simulate,
    simulate_chunks,
)

# 23 days: the last chunk is a partial one; a drift mid-way; compromised merchants look back
# across chunk boundaries.
CONFIG = SimulationConfig(days=23, users=300, seed=5, drift_at=9)


def _encoded(sim: Simulation) -> dict[str, list[bytes]]:
    return {topic: [encode_event(e) for e in evs] for topic, evs in sim.events_by_topic().items()}


@pytest.fixture(scope="module")
def whole() -> Simulation:
    return simulate(CONFIG)


@pytest.mark.parametrize("chunk_days", [1, 4, 7])
def test_chunks_concatenate_to_the_whole_simulation_byte_for_byte(
    whole: Simulation, chunk_days: int
) -> None:
    chunked = concatenate(simulate_chunks(CONFIG, chunk_days=chunk_days))
    assert _encoded(chunked) == _encoded(whole)
    assert chunked.fraud_type_by_transaction == whole.fraud_type_by_transaction


def test_each_chunk_holds_the_events_of_its_days() -> None:
    chunks = list(simulate_chunks(CONFIG, chunk_days=7))
    assert len(chunks) == 4
    for number, chunk in enumerate(chunks):
        since = CONFIG.start + timedelta(days=7 * number)
        until = min(since + timedelta(days=7), CONFIG.end)
        last = number == len(chunks) - 1
        for topic, events in chunk.events_by_topic().items():
            assert events, (number, topic)
            times = [e[EVENT_TIME_FIELD[topic]] for e in events]
            assert times == sorted(times)
            assert times[0] >= since
            if not (last and topic == LABELS):  # the last chunk also has the later labels
                assert times[-1] < until, (number, topic)
        truth = chunk.fraud_type_by_transaction
        assert set(truth) <= {t["transaction_id"] for t in chunk.transactions}
    assert any(label["label_time"] >= CONFIG.end for label in chunks[-1].labels)


def test_chunk_days_must_be_positive() -> None:
    with pytest.raises(ValueError, match="chunk_days"):
        next(simulate_chunks(CONFIG, chunk_days=0))
