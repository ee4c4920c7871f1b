"""The stream worker as a Quix Streams application.

Quix Streams consumes the source topics in a consumer group (N worker processes share the
partitions; a worker that dies has its partitions taken over after the group's session
timeout), checkpoints every ``commit_interval`` and, at each checkpoint, flushes the batching
sink BEFORE it commits the offsets (with ``processing_guarantee="exactly-once"`` inside a Kafka
transaction). The sink applies the checkpoint's events (``processor.StreamProcessor``); its
effects are idempotent, so a batch replayed after a crash changes nothing twice: every event
has exactly one effect on the online store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

from fraud_platform.lib.streaming.health import beat
from fraud_platform.lib.streaming.processor import BatchStats, StreamProcessor
from fraud_platform.names import FEATURE_STREAM_CONSUMER_GROUP

log = logging.getLogger(__name__)

CONSUMER_GROUP = FEATURE_STREAM_CONSUMER_GROUP
DEFAULT_COMMIT_INTERVAL_S = 0.2
MAX_POLL_INTERVAL_MS = 20_000


@dataclass
class WorkerTotals:
    events: int = 0
    rejected: int = 0
    rows_written: int = 0
    batches: int = 0
    busy_seconds: float = 0.0
    last_event_time_us: dict[str, int] = field(default_factory=dict)


class OnlineStoreSink(BatchingSink):
    """Applies each checkpoint's records of one topic partition to the online store."""

    def __init__(
        self,
        processor: StreamProcessor,
        contract_topic: Mapping[str, str],
        consumer_group: str,
        on_batch: Callable[[str, BatchStats], None] | None = None,
    ) -> None:
        super().__init__()
        self._consumer_group = consumer_group
        self._processor = processor
        self._contract_topic = dict(contract_topic)
        self._on_batch = on_batch
        self.totals = WorkerTotals()

    def flush(self) -> None:
        """All partitions' records of a topic in ONE application: the per-call cost (a Redis
        round trip and a polars computation per entity stream) is paid once per checkpoint
        and topic rather than once per partition."""
        try:
            by_topic: dict[str, list[bytes | None]] = {}
            for (topic, _), batch in self._batches.items():
                by_topic.setdefault(topic, []).extend(item.value for item in batch)
            for topic, values in by_topic.items():
                self._apply(topic, values)
        finally:
            self._batches.clear()

    def write(self, batch: SinkBatch) -> None:
        self._apply(batch.topic, [item.value for item in batch])

    def _apply(self, broker_topic: str, values: list[bytes | None]) -> None:
        topic = self._contract_topic[broker_topic]
        stats = self._processor.apply_raw(topic, values)
        self.totals.events += stats.events
        self.totals.rejected += stats.rejected
        self.totals.rows_written += stats.rows_written
        self.totals.batches += 1
        self.totals.busy_seconds += stats.seconds
        beat(self._processor.client, self._consumer_group, stats.events)
        if stats.rejected:
            log.warning(
                "%s: %d events rejected by the contract: %s",
                topic,
                stats.rejected,
                stats.rejected_reasons,
            )
        if self._on_batch is not None:
            self._on_batch(topic, stats)


def build_application(
    bootstrap: str,
    processor: StreamProcessor,
    *,
    topic_names: Mapping[str, str] | None = None,
    consumer_group: str = CONSUMER_GROUP,
    state_dir: Path,
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    on_batch: Callable[[str, BatchStats], None] | None = None,
) -> tuple[Application, OnlineStoreSink]:
    """A Quix Streams application maintaining ``processor``'s groups from their topics.

    ``topic_names`` maps a contract topic (``transactions``) to the name it has on this
    broker (tests use unique names); by default the contract names.
    """
    names = {topic: (topic_names or {}).get(topic, topic) for topic in processor.topics}
    app = Application(
        broker_address=bootstrap,
        consumer_group=consumer_group,
        auto_offset_reset="earliest",
        commit_interval=commit_interval_s,
        processing_guarantee="exactly-once",
        state_dir=str(state_dir),
        auto_create_topics=False,  # the platform creates its topics with a retention
        use_changelog_topics=False,  # no Quix state: the entity stores live in Redis
        consumer_extra_config={
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            # also the group's rebalance timeout: a rebalance waits this long for members that
            # were killed while joining (kill -9 during start-up), and the default 300 s held a
            # restarted worker idle for 5 min (noida's coordinator, seen in the kill -9 test)
            "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        },
        loglevel="WARNING",
    )
    sink = OnlineStoreSink(
        processor, {name: topic for topic, name in names.items()}, consumer_group, on_batch
    )
    for name in names.values():
        topic = app.topic(name, value_deserializer="bytes", key_deserializer="bytes")
        app.dataframe(topic).sink(sink)
    return app, sink


def run_worker(app: Application, sink: OnlineStoreSink, report_every_s: float = 30.0) -> None:
    """Run until SIGTERM/SIGINT, logging throughput now and then."""
    started = time.monotonic()
    try:
        app.run()
    finally:
        elapsed = time.monotonic() - started
        log.info(
            "stream worker stopped after %.0f s: %d events, %d rows written, %d rejected",
            elapsed,
            sink.totals.events,
            sink.totals.rows_written,
            sink.totals.rejected,
        )
