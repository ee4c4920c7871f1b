"""FraudScorer: the online fraud-scoring service (the served model: ``model_loading``).

Start (from the repository root)::

    BENTOML_HOME=$FRAUD_PLATFORM_DATA_DIR/bentoml \\
        bentoml serve models_bento.service:FraudScorer --port 3030

Served from a bento (``fraud-platform bento build``), the model is the one packed into it: the
class attribute ``bundled_model``, a ``bentoml.models.BentoModel`` named by the bento argument
``model_tag`` (the champion at build time); no registry, model store or data directory needed,
no hot reload. ``FRAUD_PLATFORM_MODEL_SOURCE=registry`` (and the default without a bundled
model, e.g. served from the repository) is the live mode below.

Everything is configured once, in ``__init__``, from ``Settings.from_env()``:
the model is the champion of ``fraud_catboost`` in the model registry record
(``registry.champion``: the Delta table ``registry/model_events`` under ``Settings.delta_uri``;
fallback: the newest ``fraud_catboost`` in the store), read from the platform's model store at
``Settings.bentoml_home``; Redis is ``Settings.redis_url``, read with a 50 ms socket
timeout; every decision is produced to the ``scores`` topic at ``Settings.kafka_bootstrap``
(``DecisionLog``: never blocks a request; drops, counted, when its bounded buffer is full).

Hot reload: at most once per ``CHAMPION_CHECK_INTERVAL_S`` a request starts a background look at
the registry (the request itself pays one monotonic-clock comparison, plus starting a thread once
per interval). The look reads only the Delta log entries added since the last one
(``registry.RegistryWatch``); when there are some and the champion is another tag, it loads that
model, warms it up and swaps it in with one attribute assignment (``ServedModel`` is immutable):
a request in flight keeps the model it started with, and its ``model_version`` is the tag it was
scored with. A model that fails to load (files missing, corrupt, features that do not match) is
not swapped in: the service keeps the old one, logs the error once per tag and reports it in
``/model`` (``reload_error``). A registry that no longer names a champion also keeps the current
model (the newest-model fallback is for startup only).

Features are read online for the feature service the model in service was trained on (its
``feature_service`` metadata; ``fraud_scoring_v1`` for models that predate the field), so a
champion pinned to another service brings its group versions with it.

Endpoints (BentoML routes are POST): ``/score``, ``/model``, ``/ping`` (a no-op to measure the
framework's own overhead), plus the built-in ``/livez``, ``/readyz``, ``/metrics``.

No Dagster import: this process shares the feature definitions only through
``fraud_platform.lib``.
"""

from __future__ import annotations

import functools
import gc
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bentoml

from fraud_platform.lib.serving import registry
from fraud_platform.lib.serving.decision_log import DecisionLog
from fraud_platform.lib.serving.lookup import FeatureLookup, Sent, online_store_client
from fraud_platform.lib.serving.metrics import (
    HTTP_BUCKETS,
    ProcessSampler,
    bound_endpoints,
    mark_process_dead,
    metrics,
    record_request,
)
from fraud_platform.lib.serving.scoring import ScoringModel, decision_event
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import MODEL_NAME
from fraud_platform.settings import Settings
from models_bento import early_refusal
from models_bento.errors import QuietRejectedRequests, RequestGuard
from models_bento.model_loading import (
    REGISTRY,
    BentoArgs,
    ServedModel,
    ServedModelInfo,
    choose_source,
    load_scoring_model,
    scoring_model,
    warm_up,
)
from models_bento.schemas import Pong, Reason, ScoreResponse, TransactionRequest
from models_bento.score_route import ScoreRoute
from models_bento.shedding import FrontDoor

log = logging.getLogger("bentoml.fraud_scorer")

REDIS_RETRY_AFTER_S = 1.0
CHAMPION_CHECK_INTERVAL_S = 1.0
REQUEST_ID_HEADER = "x-request-id"
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"  # where log_exception() writes
SYSTEM_PATHS = ("/", "/livez", "/readyz", "/healthz", "/metrics", "/docs.json")
API_ROUTES = ("/score", "/model", "/ping")  # not traced (the routes of FraudScorer's APIs)


def new_request_id() -> str:
    """32 random hex digits, as ``uuid.uuid4().hex`` gave (not a security token: an id).
    ``uuid4`` reads ``os.urandom``, a system call that releases the GIL; on the handler thread,
    with the event loop busy, getting it back waited up to the interpreter's 5 ms switch
    interval (py-spy at 2x capacity: ~3% of the handler thread's samples in ``uuid4``). The
    ``random`` module is seeded from ``os.urandom`` in each worker process (reseeded after a
    fork)."""
    return f"{random.getrandbits(128):032x}"


# Worker count, the concurrency bound, the access log and tracing are fixed when the class is
# defined. The bound is ours (LoadShedder via FrontDoor, at the end of this module), not BentoML's
# traffic.max_concurrency. Access log lines cost CPU per request and the decision log (Kafka)
# has every decision. BentoML traces every request with OpenTelemetry (no exporter is configured
# here): 0.2-0.3 ms of CPU per request, measured; the API routes are excluded.
_SERVING = Settings.from_env()
# This worker's FraudScorer once its __init__ is done: ScoreRoute answers /score with it.
_in_service: FraudScorer | None = None


def in_service() -> FraudScorer | None:
    return _in_service


# `fraud-platform bento build` sets these (`bentoml build --arg model_tag=...`).
_BENTO = bentoml.use_arguments(BentoArgs)


@bentoml.service(
    name="fraud_scorer",
    traffic={"timeout": 10},
    resources={"cpu": str(_SERVING.scoring_workers)},
    workers=_SERVING.scoring_workers,
    logging={"access": {"enabled": _SERVING.scoring_access_log}},
    metrics={"duration": {"buckets": list(HTTP_BUCKETS)}},  # sub-ms buckets for /score
    tracing={"excluded_urls": list(API_ROUTES)},
)
class FraudScorer:
    """Scores transactions with the champion CatBoost model, online features and rules."""

    # The model `bentoml build` packs into the bento (module docstring); None when not built so.
    bundled_model = bentoml.models.BentoModel(_BENTO.model_tag) if _BENTO.model_tag else None

    def __init__(self) -> None:
        settings = Settings.from_env()
        self._log_filter = QuietRejectedRequests()
        logging.getLogger(BENTOML_ERROR_LOGGER).addFilter(self._log_filter)
        self._model_source = choose_source(settings.model_source, _BENTO.model_tag)
        self._reload_lock = threading.Lock()
        self._reload_error: str | None = None
        self._failed_tag: str | None = None
        if self._model_source == REGISTRY:
            self._check_bentoml_home(settings.bentoml_home)
            self._home = settings.bentoml_home
            self._registry = DeltaStore(settings.delta_uri, settings.delta_storage_options)
            self._watch = registry.RegistryWatch(self._registry)
            self._seen = self._watch.latest()  # before loading: a change meanwhile counts
            self._next_check = time.monotonic() + CHAMPION_CHECK_INTERVAL_S
            scoring, loaded = load_scoring_model(self._home, self._registry)
        else:
            self._next_check = math.inf  # the bundled model is the only one: no registry look
            entry = self.bundled_model  # resolved by BentoML from the bento's models
            scoring = scoring_model(entry)
            loaded = {"entry": entry, "champion": _BENTO.model_was_champion}
        warm_up(scoring)
        self._served = ServedModel(scoring, loaded["entry"], loaded["champion"], datetime.now(UTC))
        self._redis = online_store_client(settings.redis_url, ca_cert=settings.redis_ca_cert)
        self.lookup = FeatureLookup(self._redis, scoring.service, retry_after_s=REDIS_RETRY_AFTER_S)
        self.decision_log = DecisionLog(
            settings.kafka_bootstrap,
            max_buffered=settings.decision_log_buffer,
            on_drop=metrics().decision_log_dropped,
            logger=log,
        )
        metrics().model_in_service(scoring.tag, scoring.service.name, loaded["champion"])
        self._sampler = ProcessSampler(str(bentoml.server_context.worker_index or 0)).start()
        log.info(
            "FraudScorer ready: model %s (%s, %s, feature service %s), redis %s, decisions to %s",
            scoring.tag,
            self._model_source,
            "champion" if loaded["champion"] else "not the champion",
            scoring.service.name,
            urlsplit(settings.redis_url).hostname or "?",
            f"{self.decision_log.topic}@{settings.kafka_bootstrap}",
        )
        # Everything loaded so far (modules, schemas, the model) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it mid-request.
        gc.freeze()
        global _in_service
        _in_service = self  # from now on ScoreRoute answers /score with self.decide

    @staticmethod
    def _check_bentoml_home(expected: Path) -> None:
        from bentoml._internal.configuration.containers import BentoMLContainer

        actual = Path(BentoMLContainer.bentoml_home.get()).absolute()
        if actual != expected.absolute():
            log.warning(
                "BENTOML_HOME is %s but the platform's model store is %s: models are read from "
                "the latter; set BENTOML_HOME=%s to keep BentoML's own files there too",
                actual,
                expected,
                expected,
            )

    @property
    def scoring(self) -> ScoringModel:
        return self._served.scoring

    # -- hot reload ---------------------------------------------------------------------------

    def _current(self) -> ServedModel:
        """The model for this request; at most once per interval, start a look for a new
        champion."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + CHAMPION_CHECK_INTERVAL_S
            self._check_champion()
        return self._served

    def _check_champion(self) -> None:
        if not self._reload_lock.acquire(blocking=False):
            return  # a look is running (a later one sees any newer change)
        try:
            threading.Thread(target=self._reload, name="champion-reload", daemon=True).start()
        except BaseException:
            self._reload_lock.release()
            raise

    def _reload(self) -> None:
        """When the registry has new commits, load the champion it now names and swap it in
        (background thread)."""
        try:
            current = self._served
            try:
                version = self._watch.latest()
                if version == self._seen:
                    return
                tag = registry.champion(self._registry, MODEL_NAME)
            except Exception as exc:  # noqa: BLE001  (registry unreadable: keep the model)
                self._failed(self._registry.uri(registry.TABLE), exc, current)
                return  # looked at again next interval
            self._seen = version
            if tag is None:
                log.warning(
                    "%s names no champion for %s; still serving %s",
                    self._registry.uri(registry.TABLE),
                    MODEL_NAME,
                    current.scoring.tag,
                )
                return
            if tag == current.scoring.tag:
                self._reload_error = self._failed_tag = None
                return
            started = time.perf_counter()
            try:
                scoring, loaded = load_scoring_model(self._home, self._registry, tag=tag)
                warm_up(scoring)
            except Exception as exc:  # noqa: BLE001  (any failure: keep the model in service)
                self._failed(tag, exc, current)
                return
            self._served = ServedModel(scoring, loaded["entry"], True, datetime.now(UTC))
            self._reload_error = self._failed_tag = None
            log.info(
                "new champion in service: %s (was %s), feature service %s, loaded in %.0f ms",
                scoring.tag,
                current.scoring.tag,
                scoring.service.name,
                (time.perf_counter() - started) * 1000,
            )
        finally:
            self._reload_lock.release()

    def _failed(self, what: str, exc: Exception, current: ServedModel) -> None:
        self._reload_error = f"{what}: {type(exc).__name__}: {exc}"
        if what != self._failed_tag:  # once per tag, not on every registry change
            self._failed_tag = what
            log.error(
                "could not load champion %s; still serving %s: %s: %s",
                what,
                current.scoring.tag,
                type(exc).__name__,
                exc,
            )

    # -- endpoints ----------------------------------------------------------------------------

    @bentoml.api(route="/score", input_spec=TransactionRequest)
    def score(self, ctx: bentoml.Context, **txn: Any) -> ScoreResponse:
        """Score one transaction: score, decision, reasons, model version, feature freshness."""
        # Served by ScoreRoute (models_bento.score_route) once this instance is up; this route
        # remains what the OpenAPI document describes and what answers before that.
        return self.decide(txn, ctx.request.headers.get(REQUEST_ID_HEADER))

    def decide(self, txn: dict[str, Any], request_id: str | None = None) -> ScoreResponse:
        """/score once the request is validated (``txn``: ``TransactionRequest``'s fields):
        features, score, policy, the decision log and the metrics."""
        response, finish = self.answer(txn, request_id)
        finish()
        return response

    def prefetch(self, txn: dict[str, Any]) -> Sent | None:
        """On the event loop, before ``answer(txn, ..., sent)``: the feature lookup is sent
        to Redis ahead (``FeatureLookup.send``); None if not."""
        return self.lookup.send(txn, self._served.scoring.service)

    def answer(
        self, txn: dict[str, Any], request_id: str | None = None, sent: Sent | None = None
    ) -> tuple[ScoreResponse, Callable[[], None]]:
        """``decide`` up to the answer, and what is left: ``finish()`` produces the decision to
        the decision log and records the metrics. ``ScoreRoute`` calls it once the answer is
        sent: the caller does not wait for either (~40 us of CPU). The ``total`` stage is the
        time to the answer. ``sent``: what ``prefetch(txn)`` returned."""
        started = time.perf_counter() if sent is None else sent.started
        request_id = request_id or new_request_id()
        served = self._current()  # this request's model, whatever is swapped in meanwhile
        scoring = served.scoring
        metrics().model_in_service(scoring.tag, scoring.service.name, served.champion)
        found = self.lookup.lookup(txn, scoring.service, sent)  # what this model's service pins
        lookup_s = time.perf_counter() - started
        result = scoring.score(txn, found.values, degraded=found.degraded)
        scored_at = datetime.now(UTC)
        response = ScoreResponse(
            request_id=request_id,
            transaction_id=txn["transaction_id"],
            score=result.score,
            decision=result.decision,
            reasons=[Reason(**reason) for reason in result.reasons],
            model_version=result.model_tag,
            feature_freshness=found.age_seconds,
            degraded=found.degraded,
            degraded_reason=found.degraded_reason,
        )
        answered = time.perf_counter()

        def finish() -> None:
            self.decision_log.append(
                decision_event(
                    request_id=request_id,
                    scored_at=scored_at,
                    txn=txn,
                    result=result,
                    lookup=found,
                    feature_service=scoring.service.name,
                )
            )
            record_request(
                channel=txn["channel"],
                found=found,
                result=result,
                lookup_s=lookup_s,
                started=started,
                ended=answered,
            )

        return response, finish

    @bentoml.api(route="/model")
    def model_info(self) -> ServedModelInfo:
        """The model in service: tag, features, thresholds, metrics and rules, when it was
        loaded, and why the latest champion could not be (if so)."""
        served = self._current()
        metadata = dict(served.entry.info.metadata)
        described = served.scoring.describe()
        return ServedModelInfo(
            model_version=served.scoring.tag,
            features=described["features"],
            categorical_features=described["categorical_features"],
            thresholds=described["thresholds"],
            metrics=metadata.get("metrics") or {},
            rules=described["rules"],
            explain=described["explain"],
            created_at=served.entry.info.creation_time.isoformat(),
            champion=served.champion,
            metadata=metadata,
            loaded_at=served.loaded_at.isoformat(),
            reload_error=self._reload_error,
            model_source=self._model_source,
        )

    @bentoml.api(route="/ping")
    def ping(self) -> Pong:
        """No-op: the framework's own request overhead, for latency comparisons."""
        return Pong()

    def __metrics__(self, exposition: str) -> str:
        """BentoML's hook on /metrics (called with the text it will serve): unknown request
        paths collapse into one ``endpoint="other"`` series."""
        return bound_endpoints(exposition, (*bentoml.server_context.service_routes, *SYSTEM_PATHS))

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        global _in_service
        _in_service = None
        self._sampler.stop()
        mark_process_dead()
        self.decision_log.close()
        self.lookup.close()
        self._redis.close()
        logging.getLogger(BENTOML_ERROR_LOGGER).removeFilter(self._log_filter)


# In front of everything, BentoML's HTTP metrics, tracing and timeout included (FrontDoor): past
# the concurrency bound a short line (shedding.py), then 503, before any body is read. Then
# /score itself (ScoreRoute, with the content type and size limits; BentoML's request metrics
# recorded after the answer); then BentoML's stack, in which the limits and the OpenAPI 3.0
# /docs.json (RequestGuard) come first. With the access log on (BentoML's middleware writes it)
# or the route off the front: /score innermost.
_ROUTE_IN_FRONT = (
    _SERVING.scoring_fast_route
    and _SERVING.scoring_route_front
    and _SERVING.scoring_max_concurrency > 0
    and not _SERVING.scoring_access_log
)
if _SERVING.scoring_max_concurrency:
    early_refusal.install()  # the 503s given at once: by uvicorn's protocol, before any ASGI
    FraudScorer.add_asgi_middleware(
        FrontDoor,
        front=(
            functools.partial(
                ScoreRoute,
                scorer=in_service,
                server_name=FraudScorer.name,
                guard=functools.partial(RequestGuard, service=FraudScorer),
                count_requests=True,
            )
            if _ROUTE_IN_FRONT
            else None
        ),
        limit=-(-_SERVING.scoring_max_concurrency // _SERVING.scoring_workers),
        max_wait_s=_SERVING.scoring_max_queue_wait_ms / 1000,
        burst_s=_SERVING.scoring_burst_ms / 1000,
        paths=[method.route for method in FraudScorer.apis.values()],
    )
FraudScorer.add_asgi_middleware(RequestGuard, service=FraudScorer)
if _SERVING.scoring_fast_route and not _ROUTE_IN_FRONT:
    FraudScorer.add_asgi_middleware(ScoreRoute, scorer=in_service, server_name=FraudScorer.name)
