"""Operator metrics of the scoring service (Prometheus, bounded labels).

Every label takes values from a closed set: decisions, channels and feature groups come from the
contract and the catalog, error and degradation reasons are mapped to a few categories here,
and anything else becomes ``"other"``. Nothing per request, user or model input is a label.

Multi-process: ``bentoml serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` for its workers and its
``/metrics`` sums the files every worker writes. ``prometheus_client`` picks its mode when it is
first imported, so the metric objects are created on first use (``metrics()``), in the worker,
never at import time. Outside a server (tests, batch jobs) they live in the default registry.

Record functions are called on the request path; each costs one dict lookup plus one
``inc``/``observe`` (a few hundred ns, an mmap write in multi-process mode). The children of
labelled metrics are cached: ``.labels()`` itself costs more than the update.

The metrics and the alert rules to set on them are documented in the README ("Operator metrics").
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fraud_platform.lib.contracts.events import CHANNELS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS

if TYPE_CHECKING:  # lookup.py and scoring.py import this module
    from fraud_platform.lib.serving.lookup import Lookup
    from fraud_platform.lib.serving.scoring import ScoreResult

NAMESPACE = "fraud_scorer"
OTHER = "other"
DECISIONS: frozenset[str] = frozenset({"approve", "review", "decline"})
STAGES: tuple[str, ...] = ("lookup", "model", "explain", "policy", "total")
GROUPS: frozenset[str] = frozenset(g.versioned_name for g in FEATURE_GROUPS)
# degraded reasons (see lookup.py): Redis failed on this request, Redis skipped after a recent
# failure, a feature group with no fresh row
DEGRADED_REASONS = ("online_store_error", "online_store_skipped", "missing_features")
SHED_REASONS = ("overload", "queue_timeout")
DROPPED_REASONS = ("buffer_full", "producer_error", "shutdown")

# sub-millisecond resolution where the budget is spent (a request is ~1-2 ms, SHAP ~1-4 ms)
STAGE_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005,
    0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
LOOKUP_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.025,
    0.05, 0.1,
)  # fmt: skip
# HTTP latency buckets for BentoML's own request histogram (service config metrics.duration)
HTTP_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
# feature age: from seconds (streaming groups) to days (batch groups with long TTLs)
AGE_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200, 604800,
)  # fmt: skip


class Children:
    """The children of one labelled metric by label values. A value outside its label's
    ``allowed`` set (``None``: any) is recorded as ``"other"``; only allowed values are
    cached, so the cache stays as bounded as the labels."""

    __slots__ = ("_metric", "_allowed", "_cache")

    def __init__(self, metric: Any, *allowed: Collection[str] | None) -> None:
        self._metric = metric
        self._allowed = allowed
        self._cache: dict[tuple[Any, ...], Any] = {}

    def __call__(self, *labels: Any) -> Any:
        child = self._cache.get(labels)
        if child is None:
            key = tuple(
                str(value) if values is None or value in values else OTHER
                for value, values in zip(labels, self._allowed, strict=True)
            )
            child = self._cache.get(key)
            if child is None:
                child = self._cache[key] = self._metric.labels(*key)
        return child


def redis_error_kind(exc: BaseException) -> str:
    """timeout | connection | response | other (the exception class, not its message)."""
    import redis

    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, redis.ConnectionError | ConnectionError):
        return "connection"
    if isinstance(exc, redis.ResponseError):
        return "response"
    return OTHER


class ServingMetrics:
    """The metric objects of one process; use ``metrics()``."""

    def __init__(self) -> None:
        import prometheus_client as prom  # here, not at import time (multi-process mode)

        ns = NAMESPACE
        self.decisions = prom.Counter(
            "decisions",
            "Scored transactions by final decision and channel; degraded=true "
            "when the online features were missing or unavailable.",
            ["decision", "channel", "degraded"],
            namespace=ns,
        )
        self.degraded = prom.Counter(
            "degraded",
            "Degraded answers by reason (online_store_error, online_store_skipped "
            "= Redis not tried after a recent failure, missing_features).",
            ["reason"],
            namespace=ns,
        )
        self.missing_groups = prom.Counter(
            "missing_feature_groups",
            "Feature groups without a fresh online row that made an answer degraded.",
            ["group"],
            namespace=ns,
        )
        self.redis_errors = prom.Counter(
            "redis_errors",
            "Failed online-store lookups by kind (timeout, connection, response, other).",
            ["kind"],
            namespace=ns,
        )
        self.lookup_seconds = prom.Histogram(
            "online_lookup_seconds",
            "Online-store round trip of one lookup, by outcome (ok, error); sent ahead from "
            "the event loop: from the write to the reply's arrival.",
            ["outcome"],
            namespace=ns,
            buckets=LOOKUP_BUCKETS,
        )
        self.stage_seconds = prom.Histogram(
            "stage_seconds",
            "Time spent per stage of /score: lookup, model (prediction), "
            "explain (SHAP, flagged requests only), policy, total (handler).",
            ["stage"],
            namespace=ns,
            buckets=STAGE_BUCKETS,
        )
        self.feature_age = prom.Histogram(
            "feature_age_seconds",
            "Age of the online features served, per feature group (event time minus feature time).",
            ["group"],
            namespace=ns,
            buckets=AGE_BUCKETS,
        )
        self.shed = prom.Counter(
            "shed_requests",
            "Requests refused or answered early because the service was over capacity.",
            ["reason"],
            namespace=ns,
        )
        self.log_dropped = prom.Counter(
            "decision_log_dropped", "Decision-log records dropped instead of logged.",
            ["reason"], namespace=ns,
        )  # fmt: skip
        # livemax: a worker that exits cleanly (mark_dead) stops counting as serving its tag
        self.model_info = prom.Gauge(
            "model_info",
            "1 for the model each live worker serves (0 once replaced).",
            ["model_tag", "feature_service", "champion"],
            namespace=ns,
            multiprocess_mode="livemax",
        )
        self.model_loaded = prom.Gauge(
            "model_loaded_timestamp_seconds", "When the newest model in service was loaded "
            "(Unix time).", namespace=ns, multiprocess_mode="livemax",
        )  # fmt: skip
        # per worker: /metrics in multi-process mode has no process_* metrics of its own
        self.worker_rss = prom.Gauge(
            "worker_resident_memory_bytes",
            "Resident memory of each server worker.",
            ["worker"],
            namespace=ns,
            multiprocess_mode="mostrecent",
        )
        self.worker_cpu = prom.Counter(
            "worker_cpu_seconds",
            "User plus system CPU time of each server worker.",
            ["worker"],
            namespace=ns,
        )
        self._decisions = Children(self.decisions, DECISIONS, CHANNELS, ("true", "false"))
        self._degraded = Children(self.degraded, DEGRADED_REASONS)
        self._missing = Children(self.missing_groups, GROUPS)
        self._redis_errors = Children(self.redis_errors, None)  # redis_error_kind: bounded
        self._lookup = Children(self.lookup_seconds, ("ok", "error"))
        self._stages = Children(self.stage_seconds, STAGES)
        self._ages = Children(self.feature_age, GROUPS)
        self._shed = Children(self.shed, SHED_REASONS)
        self._dropped = Children(self.log_dropped, DROPPED_REASONS)
        self._rss = Children(self.worker_rss, None)  # worker index: bounded by the config
        self._cpu = Children(self.worker_cpu, None)
        self._model: tuple[str, str, str] | None = None
        self._model_lock = threading.Lock()
        for children, values in (  # present (at 0) before the first event: rate() needs a start
            (self._stages, STAGES),
            (self._degraded, DEGRADED_REASONS),
            (self._shed, SHED_REASONS),
            (self._dropped, DROPPED_REASONS),
        ):
            for label in values:
                children(label)

    # -- request path -------------------------------------------------------------------------

    def decision(self, decision: str, channel: Any, degraded: bool) -> None:
        self._decisions(decision, channel, "true" if degraded else "false").inc()

    def degraded_answer(self, reason: str, missing: Iterable[str] = ()) -> None:
        self._degraded(reason).inc()
        for group in missing:
            self._missing(group).inc()

    def lookup(self, seconds: float, error: BaseException | None = None) -> None:
        if error is None:
            self._lookup("ok").observe(seconds)
        else:
            self._lookup("error").observe(seconds)
            self._redis_errors(redis_error_kind(error)).inc()

    def stage(self, stage: str, seconds: float) -> None:
        self._stages(stage).observe(seconds)

    def stages(self, seconds: Mapping[str, float]) -> None:
        for stage, value in seconds.items():
            self._stages(stage).observe(value)

    def feature_ages(self, ages: Mapping[str, float | None]) -> None:
        for group, age in ages.items():
            if age is not None:
                self._ages(group).observe(age)

    def model_in_service(self, tag: str, feature_service: str, champion: bool) -> None:
        """Cheap when unchanged (one tuple comparison); on a change the old tag goes to 0."""
        labels = (tag, feature_service, "true" if champion else "false")
        if labels == self._model:
            return
        with self._model_lock:
            if labels == self._model:
                return
            if self._model is not None:
                self.model_info.labels(*self._model).set(0)
            self.model_info.labels(*labels).set(1)
            self.model_loaded.set(time.time())
            self._model = labels

    # -- called by other parts of the service -------------------------------------------------

    def shed_request(self, reason: str = "overload") -> None:
        self._shed(reason).inc()

    def decision_log_dropped(self, count: int = 1, reason: str = "buffer_full") -> None:
        self._dropped(reason).inc(count)

    def sample_process(self, worker: str, state: dict[str, float]) -> None:
        """Resident memory and CPU time of this process into the per-worker metrics;
        ``state`` keeps the CPU time already counted."""
        rss, cpu = process_usage()
        self._rss(worker).set(rss)
        counted = state.get("cpu", 0.0)
        if cpu > counted:
            self._cpu(worker).inc(cpu - counted)
            state["cpu"] = cpu


def process_usage() -> tuple[float, float]:
    """(resident bytes, user+system CPU seconds) of this process."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak instead of the current size
        rss = usage.ru_maxrss * 1024
    return float(rss), usage.ru_utime + usage.ru_stime


_metrics: ServingMetrics | None = None
_metrics_lock = threading.Lock()


def metrics() -> ServingMetrics:
    """This process's metrics, created on first use."""
    global _metrics
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = ServingMetrics()
    return _metrics


class ProcessSampler:
    """A daemon thread writing this worker's memory and CPU every ``interval_s``."""

    def __init__(self, worker: str, interval_s: float = 5.0) -> None:
        self._worker = worker
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._state: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="metrics-process", daemon=True)

    def start(self) -> ProcessSampler:
        metrics().sample_process(self._worker, self._state)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            metrics().sample_process(self._worker, self._state)

    def stop(self) -> None:
        self._stop.set()


def mark_process_dead() -> None:
    """On clean shutdown: this process's live gauges (model_info) stop counting."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


_ENDPOINT = re.compile(r'endpoint="((?:[^"\\]|\\.)*)"')


def bound_endpoints(exposition: str, known: Iterable[str]) -> str:
    """BentoML labels its request metrics with the raw request path, so every unknown path a
    scanner tries becomes a series. Rewrite endpoints outside ``known`` to ``"other"`` and sum
    the series that then coincide (the exposition must not repeat a series)."""
    known = set(known)
    if all(value in known for value in _ENDPOINT.findall(exposition)):
        return exposition
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    families = []
    for family in text_string_to_metric_families(exposition):
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        for sample in family.samples:
            labels = dict(sample.labels)
            if labels.get("endpoint", OTHER) not in known:
                labels["endpoint"] = OTHER
            key = (sample.name, tuple(labels.items()))
            if key in merged:
                merged[key] = merged[key]._replace(value=merged[key].value + sample.value)
            else:
                merged[key] = sample._replace(labels=labels)
        family.samples = list(merged.values())
        families.append(family)

    class _Parsed:
        def collect(self) -> list[Any]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Parsed())
    return generate_latest(registry).decode()


def record_scored(
    *,
    decision: str,
    channel: Any,
    degraded: bool,
    feature_ages: Mapping[str, float | None],
    stage_seconds: Mapping[str, float],
) -> None:
    """Everything /score records once its answer is known."""
    m = metrics()
    m.decision(decision, channel, degraded)
    m.feature_ages(feature_ages)
    m.stages(stage_seconds)


def record_request(
    *,
    channel: Any,
    found: Lookup,
    result: ScoreResult,
    lookup_s: float,
    started: float,
    ended: float | None = None,
) -> None:
    """``record_scored`` for one /score request: its lookup, the model's stages, and the total
    from ``started`` to ``ended`` (``time.perf_counter()`` readings; ``ended``: now if None)."""
    record_scored(
        decision=result.decision,
        channel=channel,
        degraded=found.degraded,
        feature_ages=found.age_seconds,
        stage_seconds={
            "lookup": lookup_s,
            **result.stage_seconds,
            "total": (time.perf_counter() if ended is None else ended) - started,
        },
    )
