"""FraudScorer: the online fraud-scoring service.

Start (from the repository root)::

    BENTOML_HOME=$FRAUD_PLATFORM_DATA_DIR/bentoml \\
        bentoml serve models_bento.service:FraudScorer --port 3000

Everything is configured once, in ``__init__``, from ``Settings.from_env()``:
the model is the champion of ``fraud_catboost`` named in ``<bentoml_home>/champions.json``
(fallback: the newest ``fraud_catboost`` in the store), read from the platform's model store at
``Settings.bentoml_home``; Redis is ``resolve_redis_url(settings)``, read with a 50 ms socket
timeout; scored requests go to ``Settings.score_log_dir``.

Endpoints (BentoML routes are POST): ``/score``, ``/model``, ``/ping`` (a no-op to measure the
framework's own overhead), plus the built-in ``/livez``, ``/readyz``, ``/metrics``.

No Dagster import: this process shares the feature definitions only through
``fraud_platform.lib``.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bentoml
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fraud_platform.lib.score_log import ScoreLog
from fraud_platform.lib.scoring import FeatureLookup, ScoringModel, log_record
from fraud_platform.services import resolve_redis_url
from fraud_platform.settings import Settings
from models_bento.schemas import (
    EXAMPLE_TRANSACTION,
    ModelInfo,
    Pong,
    Reason,
    ScoreResponse,
    TransactionRequest,
)

log = logging.getLogger("bentoml.fraud_scorer")

MODEL_NAME = "fraud_catboost"
CHAMPION_FILE = "champions.json"  # written by fraud_platform.resources.model_store.promote
REDIS_TIMEOUT_S = 0.05
REDIS_RETRY_AFTER_S = 1.0
REQUEST_ID_HEADER = "x-request-id"
BENTOML_ERROR_LOGGER = "bentoml._internal.server.http_app"  # where log_exception() writes


class QuietRejectedRequests(logging.Filter):
    """BentoML logs every request that fails validation as an ERROR with a traceback and the
    request body (user ids, IPs). A client error is not a server error: log one WARNING line
    with the field errors only (no input values)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from pydantic import ValidationError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            errors = "; ".join(
                f"{'.'.join(str(part) for part in e['loc']) or '<request>'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_context=False)
            )
            record.msg = "rejected request (%s): %s"
            record.args = (record.args[0] if record.args else "?", errors)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


def online_store_client(url: str, timeout_s: float = REDIS_TIMEOUT_S) -> redis.Redis:
    """A Redis client that gives up after ``timeout_s``: no retries.

    redis-py 8 retries a timed-out command 10 times with backoff by default: against a hung
    Redis one lookup then takes ~5 s instead of 50 ms. Measured, hence ``Retry(NoBackoff(), 0)``.
    """
    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def resolve_model_tag(bentoml_home: Path, name: str = MODEL_NAME) -> tuple[str, bool]:
    """(tag, is_champion): the champion from champions.json, else the newest model ``name``."""
    from bentoml._internal.models import ModelStore

    champions = bentoml_home / CHAMPION_FILE
    if champions.exists():
        tag = json.loads(champions.read_text()).get(name)
        if tag:
            return tag, True
    store = ModelStore(bentoml_home / "models")
    try:
        models = store.list(name)
    except bentoml.exceptions.NotFound:
        models = []
    if not models:
        raise RuntimeError(
            f"no model {name!r} in the model store {bentoml_home / 'models'} and no champion in "
            f"{champions}: train and register one first (or set FRAUD_PLATFORM_DATA_DIR)"
        )
    newest = max(models, key=lambda m: m.info.creation_time)
    log.warning("no champion for %s in %s; using the newest model %s", name, champions, newest.tag)
    return str(newest.tag), False


def load_scoring_model(bentoml_home: Path, name: str = MODEL_NAME) -> tuple[ScoringModel, Any]:
    """The champion as a ScoringModel, plus its bentoml.Model entry (for /model)."""
    from bentoml._internal.models import ModelStore

    tag, is_champion = resolve_model_tag(bentoml_home, name)
    entry = ModelStore(bentoml_home / "models").get(tag)
    booster = bentoml.catboost.load_model(entry)
    scoring = ScoringModel.from_metadata(booster, entry.info.metadata, str(entry.tag))
    return scoring, {"entry": entry, "champion": is_champion}


@bentoml.service(
    name="fraud_scorer",
    traffic={"timeout": 10},
    resources={"cpu": "1"},
    workers=1,
)
class FraudScorer:
    """Scores transactions with the champion CatBoost model, online features and rules."""

    def __init__(self) -> None:
        settings = Settings.from_env()
        self._log_filter = QuietRejectedRequests()
        logging.getLogger(BENTOML_ERROR_LOGGER).addFilter(self._log_filter)
        self._check_bentoml_home(settings.bentoml_home)
        self.scoring, loaded = load_scoring_model(settings.bentoml_home)
        self._entry = loaded["entry"]
        self._is_champion = loaded["champion"]
        redis_url = resolve_redis_url(settings)
        self._redis = online_store_client(redis_url)
        self.lookup = FeatureLookup(self._redis, retry_after_s=REDIS_RETRY_AFTER_S)
        self.score_log = ScoreLog(settings.score_log_dir)
        self._warm_up()
        log.info(
            "FraudScorer ready: model %s (%s), redis %s, score log %s",
            self.scoring.tag,
            "champion" if self._is_champion else "newest, no champion",
            redis.connection.parse_url(redis_url).get("host", "?"),
            self.score_log.path,
        )

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

    def _warm_up(self) -> None:
        """First CatBoost calls allocate; pay that before /readyz says ready."""
        txn = TransactionRequest.model_validate({**EXAMPLE_TRANSACTION, "event_time": None})
        txn = txn.model_dump()
        self.scoring.score(txn, {}, explain="always")

    # -- endpoints ----------------------------------------------------------------------------

    @bentoml.api(route="/score", input_spec=TransactionRequest)
    def score(self, ctx: bentoml.Context, **txn: Any) -> ScoreResponse:
        """Score one transaction: score, decision, reasons, model version, feature freshness."""
        request_id = ctx.request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        found = self.lookup.lookup(txn)
        result = self.scoring.score(txn, found.values, degraded=found.degraded)
        self.score_log.append(
            log_record(
                request_id=request_id,
                scored_at=datetime.now(UTC),
                txn=txn,
                result=result,
                lookup=found,
            )
        )
        return ScoreResponse(
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

    @bentoml.api(route="/model")
    def model_info(self) -> ModelInfo:
        """The model in service: tag, features, thresholds, metrics and rules."""
        metadata = dict(self._entry.info.metadata)
        described = self.scoring.describe()
        return ModelInfo(
            model_version=self.scoring.tag,
            features=described["features"],
            categorical_features=described["categorical_features"],
            thresholds=described["thresholds"],
            metrics=metadata.get("metrics") or {},
            rules=described["rules"],
            explain=described["explain"],
            created_at=self._entry.info.creation_time.isoformat(),
            champion=self._is_champion,
            metadata=metadata,
        )

    @bentoml.api(route="/ping")
    def ping(self) -> Pong:
        """No-op: the framework's own request overhead, for latency comparisons."""
        return Pong()

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self.score_log.close()
        self._redis.close()
        logging.getLogger(BENTOML_ERROR_LOGGER).removeFilter(self._log_filter)
