"""The real-time replay's scoring thread (held-out transactions sent to ``POST /score`` in
arrival order, each once the stream worker has applied what was published before it) and the
comparison of what it scored with the offline point-in-time backtest."""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from fraud_platform.lib.contracts.events import format_timestamp
from fraud_platform.lib.streaming.applied import AppliedBarrier
from fraud_platform.lib.streaming.freshness import percentile
from fraud_platform.lib.training.metrics import average_precision, roc_auc


@dataclass
class ScoredReplay:
    """What a replay's ``POST /score`` calls answered: scores by transaction, decisions, the
    degraded answers and why, the client-side latency of each request and (real time) each
    transaction's wait for the stream worker."""

    scores: dict[str, float] = field(default_factory=dict)
    decisions: Counter[str] = field(default_factory=Counter)
    degraded_ids: set[str] = field(default_factory=set)
    reasons: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    gate_waits_ms: list[float] = field(default_factory=list)

    def score(self, http: httpx.Client, url: str, txn: Mapping[str, Any]) -> None:
        """Send ``txn`` to ``url`` and record the answer."""
        sent = time.perf_counter()
        response = http.post(url, json=request_body(txn))
        self.latencies_ms.append((time.perf_counter() - sent) * 1000)
        response.raise_for_status()
        answer = response.json()
        self.scores[txn["transaction_id"]] = float(answer["score"])
        self.decisions[answer["decision"]] += 1
        if answer.get("degraded"):
            self.degraded_ids.add(txn["transaction_id"])
            self.reasons[str(answer.get("degraded_reason"))] += 1

    def summary(self, truth: Mapping[str, str]) -> dict[str, Any]:
        """The figures every replay reports: decisions, degraded answers, client latency, and
        AUC / AP against ``truth`` (the frauds' transaction ids)."""
        ids = list(self.scores)
        labels = [int(i in truth) for i in ids]
        values = [self.scores[i] for i in ids]
        ordered = sorted(self.latencies_ms)
        frauds = sum(labels)
        return {
            "scored": len(ids),
            "decisions": dict(self.decisions),
            "degraded": len(self.degraded_ids),
            "degraded_reasons": dict(self.reasons.most_common(3)),
            "score_p50_ms": round(statistics.median(ordered), 3) if ordered else None,
            "score_p99_ms": round(percentile(ordered, 0.99) or 0, 3) if ordered else None,
            "replay_frauds": frauds,
            "replay_auc": round(roc_auc(labels, values), 4) if 0 < frauds < len(labels) else None,
            "replay_average_precision": round(average_precision(labels, values), 4)
            if frauds
            else None,
        }


def request_body(txn: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (format_timestamp(v) if k == "event_time" else v)
        for k, v in txn.items()
        if k != "schema_version"
    }


class GatedScorer:
    """``submit(txn, published_before=n)`` from the publishing loop; the thread waits for
    ``barrier.wait_through(n)`` (no barrier: scores at once), then scores. ``finish`` returns
    the results, or raises what stopped the thread."""

    def __init__(self, url: str, barrier: AppliedBarrier | None, say: Callable[[str], None]):
        self._url, self._barrier, self._say = url, barrier, say
        self._queue: queue.Queue[tuple[dict[str, Any], int] | None] = queue.Queue()
        self._result = ScoredReplay()
        self._error: BaseException | None = None
        self._expected = 0
        self._waiting: deque[datetime] = deque()  # event times submitted, not yet scored
        self._thread = threading.Thread(target=self._run, name="replay-scorer", daemon=True)

    def start(self, expected: int) -> None:
        self._expected = expected
        self._thread.start()

    def submit(self, txn: dict[str, Any], *, published_before: int) -> None:
        if self._error is not None:
            raise RuntimeError("the replay's scoring thread stopped") from self._error
        self._waiting.append(txn["event_time"])
        self._queue.put((txn, published_before))

    def oldest_waiting(self) -> datetime | None:
        """The event time of the oldest transaction submitted and not yet scored (raises what
        stopped the thread: its queue would never drain)."""
        if self._error is not None:
            raise RuntimeError("the replay's scoring thread stopped") from self._error
        try:
            return self._waiting[0]
        except IndexError:
            return None

    def finish(self) -> ScoredReplay:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("the replay's scoring thread stopped") from self._error
        return self._result

    def _run(self) -> None:
        result = self._result
        try:
            with httpx.Client(timeout=10) as http:
                while (item := self._queue.get()) is not None:
                    txn, published_before = item
                    if self._barrier is not None:
                        waited = self._barrier.wait_through(published_before)
                        result.gate_waits_ms.append(waited * 1000)
                    result.score(http, self._url, txn)
                    self._waiting.popleft()
                    if len(result.scores) % 500 == 0:
                        self._say(
                            f"  scored {len(result.scores):,}/{self._expected:,} as they arrived"
                        )
        except BaseException as exc:  # reported by submit/finish in the publishing thread
            self._error = exc
            while self._queue.get() is not None:  # let the publisher finish its loop
                pass


def compare_online_offline(
    online: Mapping[str, float],
    offline: Mapping[str, float],
    truth: Mapping[str, str],
    degraded: Collection[str] = (),
) -> dict[str, Any]:
    """The offline backtest's AP on the transactions scored online, and how the scores differ
    (in all, and among the answers that were not degraded: those must agree)."""
    ids = [i for i in online if i in offline]
    labels = [int(i in truth) for i in ids]
    differences = sorted(abs(online[i] - offline[i]) for i in ids)
    undegraded = [abs(online[i] - offline[i]) for i in ids if i not in degraded]
    return {
        "offline_average_precision": round(average_precision(labels, [offline[i] for i in ids]), 4)
        if sum(labels)
        else None,
        "online_offline_score_max_abs_diff": round(differences[-1], 6) if differences else None,
        "online_offline_scores_differing": sum(d > 1e-6 for d in differences),
        "online_offline_undegraded_scores_differing": sum(d > 1e-6 for d in undegraded),
    }
