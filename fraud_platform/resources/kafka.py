"""Kafka (or any Kafka-protocol broker): topic set-up and ingestion into bronze."""

from __future__ import annotations

import dagster as dg

from fraud_platform.lib.contracts.events import ALL_TOPICS
from fraud_platform.lib.ingestion import bronze
from fraud_platform.lib.kafka import admin as kafka_admin
from fraud_platform.lib.kafka.reader import kafka_end_offsets
from fraud_platform.lib.storage.delta import DeltaStore


class KafkaResource(dg.ConfigurableResource):
    """A Kafka cluster, Redpanda, or the embedded broker, reached at ``bootstrap_servers``."""

    bootstrap_servers: str
    partitions: int = 3
    retention_ms: int = 14 * 24 * 3600 * 1000
    max_events_per_batch: int = 2_000_000
    ingest_deadline_s: float = 1800.0
    """An ingestion run fails when events seen in Kafka at its start are still unread by then."""
    stall_timeout_s: float = 120.0
    """... or when no message arrived for this long while events were waiting."""

    def check(self) -> None:
        kafka_admin.check_kafka(self.bootstrap_servers)

    def ensure_topics(self) -> None:
        kafka_admin.ensure_topics(
            self.bootstrap_servers,
            list(ALL_TOPICS),
            partitions=self.partitions,
            retention_ms=self.retention_ms,
        )

    def end_offsets(self, topic: str) -> dict[int, int]:
        return kafka_end_offsets(topic, self.bootstrap_servers)

    def ingest(self, topic: str, delta: DeltaStore, progress=None) -> bronze.IngestResult:
        return bronze.ingest_backlog(
            topic,
            bootstrap=self.bootstrap_servers,
            store=delta,
            max_events=self.max_events_per_batch,
            deadline_s=self.ingest_deadline_s,
            stall_timeout_s=self.stall_timeout_s,
            progress=progress,
        )
