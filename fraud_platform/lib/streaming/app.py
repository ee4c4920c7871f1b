"""The stream worker as a Quix Streams application.

Quix Streams consumes the source topics in a consumer group (N worker processes share the
partitions; a worker that dies has its partitions taken over after the group's session
timeout) and checkpoints every ``commit_interval``. The sink applies the events as they arrive
(``processor.StreamProcessor``, on its own thread) and each checkpoint waits for every event
before it to be applied BEFORE it commits the offsets (with ``processing_guarantee=
"exactly-once"`` inside a Kafka transaction). The effects are idempotent, so events replayed
after a crash change nothing twice: every event has exactly one effect on the online store.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.sinks import BatchingSink, SinkBatch

from fraud_platform.lib.streaming.health import beat
from fraud_platform.lib.streaming.processor import BatchStats, StreamProcessor
from fraud_platform.names import FEATURE_STREAM_CONSUMER_GROUP

log = logging.getLogger(__name__)

CONSUMER_GROUP = FEATURE_STREAM_CONSUMER_GROUP
# The checkpoint (a Kafka transaction committing the offsets) no longer paces the work: records
# are applied as they arrive (``OnlineStoreSink``); a crash replays at most this much.
DEFAULT_COMMIT_INTERVAL_S = 2.0
DEFAULT_APPLY_INTERVAL_S = 0.05
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
    """Applies the records to the online store as they arrive, on its own thread; a checkpoint
    commits only once every record added before it is applied.

    Quix Streams calls ``add`` per record between checkpoints and ``flush`` before it commits
    the offsets. Waiting for the checkpoint serialised consumption and work: at 5,000 events/s
    a cycle was 0.2 s of polling, then a ~0.4-0.6 s flush of everything polled, so an event
    waited up to two cycles (freshness p50 ~0.9-1.1 s, p99 2-3 s in ``stream_freshness.py``).
    The effects are idempotent (a row is a function of the stored events; the stores ignore
    events they hold), so applying before the commit is safe: a crash before it replays the
    records, which changes nothing twice. The applier takes every record added so far once
    the first of them waited ``apply_interval_s``, at most one application per interval (an
    application has a fixed cost of ~85 ms: the polars queries and round trips of each group),
    so batches grow with the rate. An application's rows are written on the processor's writer
    thread while the next application computes (Redis works while the worker does), at most
    one behind: a record counts as applied once its rows are written.

    An application that fails makes every later ``flush`` raise (the offsets are never
    committed past a record that was not applied), no offset after it is recorded as applied,
    and the records of applications started after the failure was known are not applied.
    """

    def __init__(
        self,
        processor: StreamProcessor,
        contract_topic: Mapping[str, str],
        consumer_group: str,
        on_batch: Callable[[str, BatchStats], None] | None = None,
        apply_interval_s: float = DEFAULT_APPLY_INTERVAL_S,
    ) -> None:
        super().__init__()
        self._consumer_group = consumer_group
        self._processor = processor
        self._contract_topic = dict(contract_topic)
        self._on_batch = on_batch
        self._apply_interval_s = apply_interval_s
        self.totals = WorkerTotals()
        self._pending: list[tuple[str, int, int, bytes | None]] = []  # topic, partition, offset
        self._added = 0  # records handed to the applier
        self._done = 0  # records applied (or skipped after a failure)
        self._urgent = 0  # flushes waiting: apply without waiting out the interval
        self._writing = 0  # applications whose rows are not all written
        self._first_pending_at = 0.0
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._applier = threading.Thread(target=self._apply_loop, name="online-store", daemon=True)
        self._applier.start()

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        with self._changed:
            if not self._pending:  # the applier waits for the first record only
                self._first_pending_at = time.monotonic()
                self._changed.notify_all()
            self._pending.append((topic, partition, offset, value))
            self._added += 1

    def flush(self) -> None:
        """Returns once every record added so far is applied; raises if one failed."""
        with self._changed:
            target = self._added
            self._urgent += 1
            self._changed.notify_all()
            try:
                while self._done < target:
                    self._changed.wait()
            finally:
                self._urgent -= 1
            error = self._error
        if error is not None:
            raise RuntimeError("the stream worker failed to apply records") from error

    def write(self, batch: SinkBatch) -> None:  # records come through ``add``
        raise NotImplementedError

    def _apply_loop(self) -> None:
        last_start = float("-inf")
        while True:
            with self._changed:
                # one application's rows may still be written while the next computes (at
                # 5,000 events/s the write was ~35% of an application's wall time); a third
                # waits for the first
                while not self._pending or self._writing > 1:
                    self._changed.wait()
                # the first record waits the interval, and applications start the interval
                # apart, unless a checkpoint waits: taking the few records that arrived in
                # the first milliseconds after a checkpoint cost an application's fixed cost
                # for them (~150 ms at 5,000 events/s)
                ready_at = max(self._first_pending_at, last_start) + self._apply_interval_s
                while not self._urgent and (wait := ready_at - time.monotonic()) > 0:
                    self._changed.wait(wait)
                records, self._pending = self._pending, []
                self._writing += 1
            last_start = time.monotonic()
            self._start_records(records)

    def _start_records(self, records: list[tuple[str, int, int, bytes | None]]) -> None:
        """The records of each topic in ONE application (the per-call cost, a Redis round trip
        and a polars computation per entity stream, is paid once per topic), computed here and
        written on the processor's writer thread; ``_written`` counts them done."""
        by_topic: dict[str, tuple[list[bytes | None], dict[tuple[str, int], int]]] = {}
        for topic, partition, offset, value in records:
            values, ends = by_topic.setdefault(topic, ([], {}))
            values.append(value)
            ends[(topic, partition)] = offset + 1  # a partition's records come in offset order
        started: list[tuple[str, Future[BatchStats], dict[tuple[str, int], int]]] = []
        try:
            if self._error is None:
                for topic, (values, ends) in by_topic.items():
                    topic_name = self._contract_topic[topic]
                    started.append(
                        (topic_name, self._processor.start_raw(topic_name, values), ends)
                    )
        except BaseException as exc:  # noqa: BLE001 - raised by the next flush
            log.exception("applying %d records failed", len(records))
            self._fail(exc)
        if not started:
            self._written(len(records))
        for i, (topic, future, ends) in enumerate(started):
            # the writer thread finishes them in order: the last topic's ends the application
            application = len(records) if i == len(started) - 1 else None
            future.add_done_callback(functools.partial(self._on_written, topic, ends, application))

    def _on_written(
        self,
        topic: str,
        ends: dict[tuple[str, int], int],
        application: int | None,
        future: Future[BatchStats],
    ) -> None:
        """On the writer thread: the rows of one topic's records are written (or failed);
        ``application``: for the application's last topic, its record count (all of them
        are applied now), else None."""
        try:
            self._record(topic, future.result(), ends)
        except BaseException as exc:  # noqa: BLE001 - raised by the next flush
            log.exception("applying %s records failed", topic)
            self._fail(exc)
        finally:
            if application is not None:
                self._written(application)

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            self._error = self._error or exc

    def _written(self, records: int) -> None:
        with self._changed:
            self._done += records
            self._writing -= 1
            self._changed.notify_all()

    def _record(self, topic: str, stats: BatchStats, applied: dict[tuple[str, int], int]) -> None:
        """An application's rows are written: its totals, and its offsets for readers waiting
        on them (``applied.AppliedBarrier``) unless an application before it failed."""
        self.totals.events += stats.events
        self.totals.rejected += stats.rejected
        self.totals.rows_written += stats.rows_written
        self.totals.batches += 1
        self.totals.busy_seconds += stats.seconds
        if self._error is not None:
            return
        beat(self._processor.client, self._consumer_group, stats.events, applied)
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
    apply_interval_s: float = DEFAULT_APPLY_INTERVAL_S,
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
            # an idle fetch returns after this long (Kafka returns at once when data arrives;
            # tansu held it for the default 500 ms: 1,000 events/s p50 0.28 -> 0.19 s)
            "fetch.wait.max.ms": 50,
            # no new fetch while a partition has 1,000 records queued locally (the default
            # keeps fetching up to 100,000, 20 ms apart here): noida answers every fetch at
            # once, so a consumer spins against it (an idle one ~0.5 of a core, noida ~0.4).
            # At 5,000 events/s, two pairs alternated: p99 1.99 / 2.04 -> 1.28 / 1.13 s
            "queued.min.messages": 1_000,
            "fetch.queue.backoff.ms": 20,
            "heartbeat.interval.ms": 1000,
            # also the group's rebalance timeout: a rebalance waits this long for members that
            # were killed while joining (kill -9 during start-up), and the default 300 s held a
            # restarted worker idle for 5 min (noida's coordinator, seen in the kill -9 test)
            "max.poll.interval.ms": MAX_POLL_INTERVAL_MS,
        },
        loglevel="WARNING",
    )
    sink = OnlineStoreSink(
        processor,
        {name: topic for topic, name in names.items()},
        consumer_group,
        on_batch,
        apply_interval_s=apply_interval_s,
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
