"""Compaction and vacuum keep rows and the recorded Kafka offsets, and reduce files."""

import uuid

import pytest

from fraud_platform.lib.contracts.events import encode_event
from fraud_platform.lib.ingestion.bronze import committed_offsets, ingest_topic
from fraud_platform.lib.simulation import SimulationConfig, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.storage.maintenance import compact_and_vacuum
from fraud_platform.names import bronze_table

pytestmark = pytest.mark.integration


def test_compaction_keeps_rows_and_offsets_and_reduces_files(
    kafka_broker, make_topic, produce, tmp_path
) -> None:
    topic = make_topic("maint", partitions=1)
    events = simulate(SimulationConfig(days=1, users=30, seed=5)).transactions[:120]
    suffix = uuid.uuid4().hex[:6]
    payloads = [
        encode_event({**e, "transaction_id": f"{e['transaction_id']}-{suffix}"}) for e in events
    ]
    store = DeltaStore(str(tmp_path / "delta"))
    for start in range(0, len(payloads), 20):  # six micro-batches: six small files
        produce(topic, payloads[start : start + 20])
        ingest_topic(topic, bootstrap=kafka_broker.bootstrap, store=store, contract="transactions")
    table = bronze_table(topic)
    rows_before = sorted(store.read(table)["transaction_id"].to_list())
    offsets_before = committed_offsets(topic, store)

    result = compact_and_vacuum(store, table)

    assert result.files_before >= 3
    assert result.files_after < result.files_before
    assert sorted(store.read(table)["transaction_id"].to_list()) == rows_before
    assert committed_offsets(topic, store) == offsets_before
    # a further ingest still resumes exactly where bronze left off
    ingest = ingest_topic(
        topic, bootstrap=kafka_broker.bootstrap, store=store, contract="transactions"
    )
    assert ingest.accepted == 0
