"""The decision log: every decision of the scoring service, produced to the ``scores`` topic.

``DecisionLog.append`` encodes the event (the ``scores`` contract, see
``scoring.decision_event``) and hands it to librdkafka without waiting: librdkafka's queue IS
the bounded in-memory buffer (``max_buffered`` messages, ``max_buffered_kb``). A background
thread serves delivery reports. While Kafka is unreachable messages wait in that queue; a
decision that finds it full, and a message still undelivered after ``message_timeout_s`` (or
at ``close``), is dropped and counted in ``dropped`` (``on_drop`` is called with the number
dropped and the reason, for a metric). The request never waits on Kafka and never fails because of it.

Encoding happens on the request's thread (~10-20 µs for a ~2 KB event, measured in
``tests/serving/test_decision_log.py``) rather than on a background thread: a thread encoding a
batch holds the GIL for up to the 5 ms switch interval, which a request would wait for.

Messages are keyed by transaction id; the broker is a transport: bronze (``bronze/scores``,
ingested by ``lib/ingestion/bronze.py``) is the record of what was decided.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from fraud_platform.lib.contracts.events import SCORES, encode_event, event_key
from fraud_platform.lib.kafka.producer import Producer

log = logging.getLogger(__name__)

DROP_LOG_INTERVAL_S = 10.0


class DecisionLog:
    """Produces decision events to ``topic`` asynchronously, dropping (and counting) rather than
    blocking when the bounded buffer is full."""

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = SCORES,
        max_buffered: int = 100_000,
        max_buffered_kb: int = 65_536,
        message_timeout_s: float = 300.0,
        on_drop: Callable[[int, str], None] | None = None,
        config: Mapping[str, Any] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        """``logger``: where drops, librdkafka's own messages and the closing stats go."""
        self.topic = topic
        self._log = logger or log
        self.bootstrap = bootstrap
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self.appended = 0
        self.dropped = 0
        self._failed = 0
        self._last_drop_log = 0.0
        self._closed = False
        settings = {
            "queue.buffering.max.messages": max_buffered,
            "queue.buffering.max.kbytes": max_buffered_kb,
            "message.timeout.ms": int(message_timeout_s * 1000),
            "linger.ms": 50,
            # successes need no Python callback (one per message, holding the GIL in the
            # poller thread); delivered = appended - failed - still buffered
            "delivery.report.only.error": True,
            "logger": self._log,
            **(config or {}),
        }
        self._producer = Producer(bootstrap, settings)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="decision-log", daemon=True)
        self._poller.start()

    def append(self, event: dict[str, Any]) -> bool:
        """Queue one decision event; False (and counted as dropped) when the buffer is full."""
        if self._closed:
            self._drop(1, "the decision log is closed", "shutdown")
            return False
        value = encode_event(event)
        if self._producer.offer(self.topic, value, event_key(SCORES, event), self._delivered):
            with self._lock:
                self.appended += 1
            return True
        self._drop(1, "buffer full (Kafka unreachable or too slow)", "buffer_full")
        return False

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            with self._lock:
                self._failed += 1
            self._drop(1, f"not delivered: {err}", "producer_error")

    def _drop(self, n: int, why: str, reason: str) -> None:
        """``reason``: buffer_full, producer_error or shutdown (the metric's label)."""
        with self._lock:
            self.dropped += n
            total = self.dropped
            now = time.monotonic()
            loud = now - self._last_drop_log >= DROP_LOG_INTERVAL_S
            if loud:
                self._last_drop_log = now
        if loud:  # the first drop, then at most one line per interval
            self._log.warning(
                "decision log: %d record(s) dropped so far (topic %s at %s): %s",
                total,
                self.topic,
                self.bootstrap,
                why,
            )
        if self._on_drop is not None:
            self._on_drop(n, reason)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.poll(0.2)
            except Exception:  # noqa: BLE001 - a callback failing must not stop the reports
                self._log.exception("decision log: serving delivery reports failed")

    @property
    def buffered(self) -> int:
        """Events queued and not yet acknowledged by the broker."""
        return self._producer.queued()

    def stats(self) -> dict[str, int]:
        buffered = self.buffered
        with self._lock:
            return {
                "appended": self.appended,
                "delivered": self.appended - self._failed - buffered,
                "dropped": self.dropped,
                "buffered": buffered,
            }

    def flush(self, timeout_s: float = 10.0) -> int:
        """Wait up to ``timeout_s`` for the buffer to drain; returns what is still buffered."""
        deadline = time.monotonic() + timeout_s
        while self.buffered and time.monotonic() < deadline:
            time.sleep(0.01)  # the poller thread serves the reports
        return self.buffered

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is buffered within ``timeout_s``; the rest counts as dropped."""
        if self._closed:
            return
        self._closed = True
        left = self.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=5)
        if left:
            self._drop(left, f"still buffered at shutdown after {timeout_s:.0f}s", "shutdown")
        self._log.info("decision log closed: %s", self.stats())

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
