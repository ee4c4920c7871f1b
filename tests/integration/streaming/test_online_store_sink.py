"""The stream worker's sink applies records as they arrive, and a checkpoint commits only once
every record before it is applied (``lib/streaming/app.OnlineStoreSink``).

The processor here records what it is asked to apply (``start_raw``: computed at once, then
"written" on a writer thread of its own, as ``StreamProcessor`` does), and either stage can be
held or made to fail: the sink's contract is about when and in what order it hands records over
and counts them applied, not about the rows (the worker tests check those end to end, through
Kafka).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
import redis

from fraud_platform.lib.streaming.app import OnlineStoreSink
from fraud_platform.lib.streaming.health import applied_key, applied_offsets, heartbeat_key
from fraud_platform.lib.streaming.processor import BatchStats

TOPICS = {"b-transactions": "transactions", "b-account_events": "account_events"}


class RecordingProcessor:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.applied: list[tuple[str, list[bytes | None]]] = []  # computed
        self.written: list[tuple[str, list[bytes | None]]] = []
        self.release = threading.Event()
        self.release.set()
        self.release_writes = threading.Event()
        self.release_writes.set()
        self.entered = threading.Event()
        self.fail_on: bytes | None = None
        self.fail_write_on: bytes | None = None
        self._writer = ThreadPoolExecutor(max_workers=1)

    def start_raw(self, topic: str, values: list[bytes | None]) -> Future[BatchStats]:
        self.entered.set()
        assert self.release.wait(10)
        if self.fail_on is not None and self.fail_on in values:
            raise ConnectionError("redis went away")
        self.applied.append((topic, list(values)))

        def write() -> BatchStats:
            assert self.release_writes.wait(10)
            if self.fail_write_on is not None and self.fail_write_on in values:
                raise ConnectionError("redis went away while writing")
            self.written.append((topic, list(values)))
            return BatchStats(events=len(values))

        return self._writer.submit(write)

    def values(self, topic: str) -> list[bytes | None]:
        return [v for t, batch in self.applied if t == topic for v in batch]


def _wait_for(condition: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def _add(sink: OnlineStoreSink, topic: str, value: bytes, offset: int) -> None:
    sink.add(value, None, 0, [], topic, 0, offset)


def _sink(client: redis.Redis, **kw) -> tuple[OnlineStoreSink, RecordingProcessor, str]:
    processor = RecordingProcessor(client)
    group = f"sink-{uuid.uuid4().hex[:8]}"
    return OnlineStoreSink(processor, TOPICS, group, **kw), processor, group  # type: ignore[arg-type]


def test_records_are_applied_before_any_checkpoint(redis_client: redis.Redis) -> None:
    sink, processor, group = _sink(redis_client, apply_interval_s=0.01)
    for i in range(5):
        _add(sink, "b-transactions", f"t{i}".encode(), i)
    # the offset after the last applied record, for the real-time replay's gate, once written
    assert _wait_for(lambda: applied_offsets(redis_client, group, [("b-transactions", 0)]) == [5])
    assert [v for _, batch in processor.written for v in batch] == [
        f"t{i}".encode() for i in range(5)
    ]
    assert int(redis_client.hget(heartbeat_key(group), "events") or 0) == 5
    assert applied_offsets(redis_client, group, [("b-transactions", 0), ("b-x", 0)]) == [5, -1]
    redis_client.delete(heartbeat_key(group), applied_key(group))


def test_flush_returns_only_once_every_record_added_before_it_is_applied(
    redis_client: redis.Redis,
) -> None:
    sink, processor, group = _sink(redis_client, apply_interval_s=0.0)
    processor.release.clear()
    _add(sink, "b-transactions", b"first", 0)
    assert processor.entered.wait(5)  # the applier holds "first"
    _add(sink, "b-transactions", b"second", 1)
    _add(sink, "b-account_events", b"login", 0)
    flushed = threading.Event()
    flusher = threading.Thread(target=lambda: (sink.flush(), flushed.set()))
    flusher.start()
    assert not flushed.wait(0.5)  # still applying "first"
    processor.release.set()
    assert flushed.wait(10)
    flusher.join()
    assert processor.values("transactions") == [b"first", b"second"]
    assert processor.values("account_events") == [b"login"]
    assert sink.totals.events == 3
    redis_client.delete(heartbeat_key(group))


def test_a_failed_application_fails_every_later_checkpoint(redis_client: redis.Redis) -> None:
    sink, processor, group = _sink(redis_client, apply_interval_s=0.0)
    processor.fail_on = b"bad"
    _add(sink, "b-transactions", b"bad", 0)
    with pytest.raises(RuntimeError, match="failed to apply"):
        sink.flush()
    processor.fail_on = None
    _add(sink, "b-transactions", b"later", 1)
    with pytest.raises(RuntimeError, match="failed to apply"):
        sink.flush()
    assert processor.applied == []  # nothing after the failure is applied
    redis_client.delete(heartbeat_key(group))


def test_the_interval_batches_records_that_arrive_together(redis_client: redis.Redis) -> None:
    sink, processor, group = _sink(redis_client, apply_interval_s=0.3)
    _add(sink, "b-transactions", b"a", 0)
    assert processor.entered.wait(5)
    time.sleep(0.05)  # the first application ran; the next waits out the interval
    for i in range(20):
        _add(sink, "b-transactions", f"r{i}".encode(), i + 1)
    sink.flush()
    batches = [batch for _, batch in processor.applied]
    assert batches == [[b"a"], [f"r{i}".encode() for i in range(20)]]
    redis_client.delete(heartbeat_key(group))


def test_the_next_records_are_computed_while_the_last_are_written(
    redis_client: redis.Redis,
) -> None:
    sink, processor, group = _sink(redis_client, apply_interval_s=0.0)
    processor.release_writes.clear()
    _add(sink, "b-transactions", b"a", 0)
    assert _wait_for(lambda: processor.values("transactions") == [b"a"])
    _add(sink, "b-transactions", b"b", 1)  # computed while "a" is being written
    assert _wait_for(lambda: processor.values("transactions") == [b"a", b"b"])
    _add(sink, "b-transactions", b"c", 2)  # a third application waits for the first's writes
    time.sleep(0.3)
    assert processor.values("transactions") == [b"a", b"b"]
    assert applied_offsets(redis_client, group, [("b-transactions", 0)]) == [-1]
    flushed = threading.Event()
    flusher = threading.Thread(target=lambda: (sink.flush(), flushed.set()))
    flusher.start()
    assert not flushed.wait(0.3)  # nothing is written yet
    processor.release_writes.set()
    assert flushed.wait(10)
    flusher.join()
    assert [batch for _, batch in processor.written] == [[b"a"], [b"b"], [b"c"]]
    assert applied_offsets(redis_client, group, [("b-transactions", 0)]) == [3]
    assert sink.totals.events == 3
    redis_client.delete(heartbeat_key(group), applied_key(group))


def test_a_failed_write_fails_the_checkpoint_and_no_offset_after_it_is_recorded(
    redis_client: redis.Redis,
) -> None:
    sink, processor, group = _sink(redis_client, apply_interval_s=0.0)
    processor.fail_write_on = b"bad"
    _add(sink, "b-transactions", b"good", 0)
    sink.flush()
    assert applied_offsets(redis_client, group, [("b-transactions", 0)]) == [1]
    processor.release_writes.clear()
    _add(sink, "b-transactions", b"bad", 1)
    assert _wait_for(lambda: b"bad" in processor.values("transactions"))
    _add(sink, "b-transactions", b"next", 2)  # computed before the failure is known
    assert _wait_for(lambda: b"next" in processor.values("transactions"))
    processor.release_writes.set()
    with pytest.raises(RuntimeError, match="failed to apply"):
        sink.flush()
    # "next" was written after "bad" failed, but the offsets stay where the last good
    # application left them: a reader waiting on them never passes a missing row
    assert applied_offsets(redis_client, group, [("b-transactions", 0)]) == [1]
    _add(sink, "b-transactions", b"later", 3)
    with pytest.raises(RuntimeError, match="failed to apply"):
        sink.flush()
    assert b"later" not in processor.values("transactions")
    redis_client.delete(heartbeat_key(group), applied_key(group))
