"""Online freshness as a reader sees it: the time from an event's produce call until the row it
creates, or a later row of the same entity, is readable online (a thread polls Redis). A later
row counts: the online history keeps an entity's newest rows, so a row superseded within one
batch by the entity's next events may never be stored at all."""

from __future__ import annotations

import itertools
import threading
import time

import redis

POLL_INTERVAL_S = 0.005
POLL_BATCH = 256  # the oldest pending rows checked per round: bounded load on Redis


class FreshnessProbe:
    """``watch(key, score)`` right after producing an event whose row goes to the sorted set
    ``key`` at ``score`` (its feature_time in microseconds); ``stop()`` returns the latencies
    (ms) of the rows seen and how many never appeared (nor a later one) within ``grace_s``."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pending: dict[tuple[str, int], float] = {}
        self._seen: list[tuple[float, float]] = []  # (perf_counter at watch, latency ms)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._poll, name="freshness-probe", daemon=True)
        self._thread.start()

    def watch(self, key: str, score: int) -> None:
        with self._lock:
            self._pending.setdefault((key, score), time.perf_counter())

    def _poll(self) -> None:
        while time.perf_counter() < self._deadline:
            with self._lock:
                items = list(itertools.islice(self._pending.items(), POLL_BATCH))
            if not items and self._stopping.is_set():
                return
            if items:
                pipe = self._client.pipeline(transaction=False)
                for (key, score), _ in items:
                    pipe.zcount(key, score, "+inf")
                found = pipe.execute()
                now = time.perf_counter()
                with self._lock:
                    for ((key, score), sent_at), count in zip(items, found, strict=True):
                        if count:
                            self._seen.append((sent_at, (now - sent_at) * 1000))
                            self._pending.pop((key, score), None)
            time.sleep(POLL_INTERVAL_S)

    def stop(self, grace_s: float = 30.0) -> tuple[list[float], int]:
        self._deadline = time.perf_counter() + grace_s
        self._stopping.set()
        self._thread.join()
        with self._lock:
            return sorted(latency for _, latency in self._seen), len(self._pending)

    def by_second(self, origin: float) -> list[list[float]]:
        """The latencies (ms, sorted) of the rows seen, by whole seconds of their watch time
        after ``origin`` (a ``time.perf_counter()``): whether a rate is kept up with shows as
        a tail that stays level rather than one that grows second by second."""
        buckets: dict[int, list[float]] = {}
        with self._lock:
            for sent_at, latency in self._seen:
                buckets.setdefault(max(0, int(sent_at - origin)), []).append(latency)
        last = max(buckets, default=-1)
        return [sorted(buckets.get(second, [])) for second in range(last + 1)]


def percentile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of sorted values, nearest rank; None when empty."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
