"""A large backlog is read to the high watermarks seen at the start, never given up on because
the broker answered the first fetch late; events left behind fail the run loudly."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from fraud_platform.lib.contracts.events import TRANSACTIONS
from fraud_platform.lib.ingestion.bronze import (
    IngestionIncomplete,
    committed_offsets,
    ingest_backlog,
    ingest_topic,
)
from fraud_platform.lib.kafka.admin import ensure_topics
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import bronze_table
from fraud_platform.tools.brokers import BrokerSpec

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
BACKLOG = 200_000
PARTITIONS = 3


def payloads(count: int) -> list[bytes]:
    """``count`` valid transactions as JSON, built in bulk (ids t0..t{count-1})."""
    i = pl.int_range(0, count, eager=True).cast(pl.Utf8)
    frame = pl.DataFrame({"i": i}).select(
        pl.concat_str(
            [
                pl.lit('{"schema_version":1,"transaction_id":"t'),
                pl.col("i"),
                pl.lit('","event_time":"2026-11-19T10:00:00Z","user_id":"u'),
                pl.col("i"),
                pl.lit(
                    '","card_id":"c1","merchant_id":"m1","merchant_category":"grocery",'
                    '"amount":12.5,"currency":"EUR","channel":"ecommerce",'
                    '"counterparty_id":null,"device_id":"d1","ip":"10.0.0.1","country":"DE"}'
                ),
            ]
        ).alias("payload")
    )
    return [p.encode() for p in frame["payload"].to_list()]


def test_backlog_is_read_whole_though_the_first_fetch_comes_after_the_idle_timeout(
    kafka_broker: BrokerSpec, produce: Callable[..., None], tmp_path: Path
) -> None:
    # The idle timeout (0.01 s) is far below the time the broker takes to answer the first
    # fetch of 200k events: a reader that stopped on idleness read 0 of them here.
    topic = f"backlog_{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_broker.bootstrap, {topic: PARTITIONS}, retention_ms=3_600_000)
    produce(topic, payloads(BACKLOG), partitions=PARTITIONS)
    store = DeltaStore(str(tmp_path))
    result = ingest_backlog(
        topic,
        bootstrap=kafka_broker.bootstrap,
        store=store,
        max_events=80_000,  # three micro-batches, each its own commit
        poll_timeout_s=0.01,
        now=NOW,
        contract=TRANSACTIONS,
    )
    assert result.accepted == BACKLOG
    assert result.behind == 0
    assert sum(committed_offsets(topic, store).values()) == BACKLOG
    ids = store.read(bronze_table(topic))["transaction_id"]
    assert ids.n_unique() == BACKLOG == ids.len()


def test_unread_events_fail_the_run_instead_of_reporting_zero_rows(
    kafka_broker: BrokerSpec, produce: Callable[..., None], tmp_path: Path
) -> None:
    # A deadline too short to read anything: the events are known to wait, so the run fails
    # with the lag in its message instead of succeeding with 0 rows added.
    topic = f"backlog_{uuid.uuid4().hex[:10]}"
    ensure_topics(kafka_broker.bootstrap, {topic: 1}, retention_ms=3_600_000)
    produce(topic, payloads(50_000))
    with pytest.raises(IngestionIncomplete, match="events waiting in Kafka"):
        ingest_topic(
            topic,
            bootstrap=kafka_broker.bootstrap,
            store=DeltaStore(str(tmp_path)),
            poll_timeout_s=0.001,
            stall_timeout_s=0.001,
            deadline_s=0.001,
            now=NOW,
            contract=TRANSACTIONS,
        )
    assert committed_offsets(topic, DeltaStore(str(tmp_path))) == {0: 0}  # nothing consumed
