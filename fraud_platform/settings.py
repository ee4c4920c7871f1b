"""One settings object, read from the environment, with embedded defaults.

This is the only module that reads environment variables. Everything else receives a
``Settings`` (or a Dagster resource built from one).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DEFAULT_PROFILES_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# in flight across the scoring service's workers; at ~2-4 ms of CPU per request on 2 cores a
# queue of this depth waits < 50 ms (benchmarks/serving_load.py measures it)
DEFAULT_SCORING_MAX_CONCURRENCY = 4
DEFAULT_SCORING_MAX_QUEUE_WAIT_MS = 10
# a line younger than this is a burst, not overload: it may stand (and a request wait) this long
DEFAULT_SCORING_BURST_MS = 20
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
DELTA_OPTION_PREFIX = "FRAUD_PLATFORM_DELTA_OPT_"
# variables whose value may carry a password: Dagster resources take them as ``dg.EnvVar`` when
# set, so the UI shows the variable's name, never the value
SECRET_VARIABLES = ("REDIS_URL", "FRAUD_PLATFORM_PROFILES_PG_URL", "FRAUD_PLATFORM_ALERT_WEBHOOK")
MODEL_SOURCES = ("bundled", "registry")


class SettingsError(ValueError):
    """A setting from the environment is unusable; the message is one line naming the variable."""


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = _env(environ, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not an integer") from None


def _date(environ: Mapping[str, str], name: str, default: date) -> date:
    value = _env(environ, name)
    if value is None:
        return default
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise SettingsError(f"{name}={value!r} is not a date (YYYY-MM-DD)") from None


def _bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = _env(environ, name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean (true/false)")


def _datetime(environ: Mapping[str, str], name: str) -> datetime | None:
    """An ISO date or date-time; without a zone it is UTC."""
    value = _env(environ, name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SettingsError(
            f"{name}={value!r} is not an ISO date or date-time (e.g. 2026-03-01T00:00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def redact_url(url: str) -> str:
    """``url`` without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def validate_redis_url(url: str) -> str:
    """``url`` if redis-py would connect where it says; a malformed database number is otherwise
    ignored by redis-py, which silently uses DB 0."""
    parts = urlsplit(url)
    shown = f"REDIS_URL={redact_url(url)}"
    if parts.scheme not in REDIS_SCHEMES:
        raise SettingsError(f"{shown}: the scheme must be one of {', '.join(REDIS_SCHEMES)}")
    try:
        parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    except ValueError:
        raise SettingsError(f"{shown}: the port is not a number") from None
    databases = parse_qs(parts.query).get("db", [])
    if parts.scheme != "unix" and parts.path not in ("", "/"):
        databases.append(parts.path.removeprefix("/"))
    for db in databases:
        if not db.isdigit():
            raise SettingsError(
                f"{shown}: the database {db!r} is not a number (e.g. {DEFAULT_REDIS_URL})"
            )
    if parts.scheme == "unix" and not parts.path:
        raise SettingsError(f"{shown}: a unix:// URL needs the socket path")
    return url


@dataclass(frozen=True)
class Settings:
    """Where data lives and which external systems to talk to.

    ``kafka_bootstrap_servers`` left unset means "embedded": ``fraud-platform services up`` starts
    a local Kafka-protocol broker. ``redis_url`` (REDIS_URL, default ``redis://127.0.0.1:6379/0``)
    is the online store every process uses; ``services up`` starts a private ``redis-server``
    there only when it is on loopback and nothing answers.

    The scoring service: ``scoring_workers`` (FRAUD_PLATFORM_SCORING_WORKERS, default one per
    CPU core), ``scoring_max_concurrency`` (FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY, requests in
    progress across all workers, split evenly, beyond which a request waits in line),
    ``scoring_max_queue_wait_ms`` (FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS, default 10: how long
    it may wait before the 503 with Retry-After; 0 = answer 503 at once past the bound),
    ``scoring_burst_ms`` (FRAUD_PLATFORM_SCORING_BURST_MS, default 20: a request joining a line
    younger than this, a burst, may wait this long; only a line standing longer, one that does
    not drain, gets the shorter wait; 0 = ``scoring_max_queue_wait_ms`` always) and
    ``scoring_access_log`` (FRAUD_PLATFORM_SCORING_ACCESS_LOG, BentoML's per-request log line;
    off by default: it costs CPU on the request path and the decision log records every decision)
    and ``scoring_fast_route`` (FRAUD_PLATFORM_SCORING_FAST_ROUTE, default on: ``/score`` answered
    below BentoML's API machinery, ``models_bento/score_route.py``; off: by BentoML's route),
    ``scoring_route_front`` (FRAUD_PLATFORM_SCORING_ROUTE_FRONT, default on: that route in
    front of BentoML's middlewares, behind the shedder, counted in BentoML's request metrics
    after the answer, ``models_bento/traffic_metrics.py``; inside them when off, or when the
    access log is on or there is no concurrency bound).

    ``feature_shards`` (FRAUD_PLATFORM_FEATURE_SHARDS, default 1) adds the sharded feature
    backfill (date x entity-hash shard partitions, README "Redis Cluster and sharded
    backfills") when above 1.

    ``partitions_start`` (FRAUD_PLATFORM_PARTITIONS_START, default 2024-01-01) is the first
    daily feature partition: events before it are an error naming the range, not ignored.

    ``profiles_pg_url`` (FRAUD_PLATFORM_PROFILES_PG_URL, default
    ``postgresql://postgres@127.0.0.1:5432/postgres``) is the libpq URL of the PostgreSQL
    database holding the ``account_profiles`` table read into ``bronze/account_profiles``.

    ``model_source`` (FRAUD_PLATFORM_MODEL_SOURCE): where the scoring service gets its model.
    ``bundled``: the model packed into the bento (``fraud-platform bento build``), no hot
    reload; ``registry``: the registry's champion from the model store under the data directory,
    swapped in when the champion changes. Unset: ``bundled`` when the service carries a model,
    else ``registry``.

    ``decision_log_buffer`` (FRAUD_PLATFORM_DECISION_LOG_BUFFER, default 100,000) bounds the
    decisions the scoring service keeps in memory while Kafka cannot take them.

    ``training_as_of`` (FRAUD_PLATFORM_TRAINING_AS_OF, an ISO date/time, UTC when no zone is
    given; default unset = the newest transaction) is the training set's cutoff when its asset
    config does not give one: train on what was known then.

    ``redis_ca_cert`` (FRAUD_PLATFORM_REDIS_CA_CERT): a PEM file of the CA that signed the Redis
    server's TLS certificate, for a ``rediss://`` REDIS_URL (unset: the system's CAs).

    ``secrets_in_env``: which of ``SECRET_VARIABLES`` are set; ``delta_option_variables``: the
    variable each Delta storage option was read from (``FRAUD_PLATFORM_DELTA_OPT_<KEY>``).
    """

    data_dir: Path = Path(".fraud_platform")
    kafka_bootstrap_servers: str | None = None
    redis_url: str = DEFAULT_REDIS_URL
    delta_root: str | None = None
    dagster_home: Path | None = None
    dagster_postgres_url: str | None = None
    broker: str = "noida"
    embedded_kafka_port: int = 19092
    service_port: int = 3030
    ui_port: int = 3000
    model_source: str | None = None
    delta_storage_options: dict[str, str] = field(default_factory=dict)
    alert_webhook: bool = False  # the URL itself stays a secret, read by Dagster's EnvVar
    ui_url: str | None = None  # FRAUD_PLATFORM_UI_URL: the Dagster UI that alerts link to
    profiles_pg_url: str | None = DEFAULT_PROFILES_PG_URL
    decision_log_buffer: int = 100_000
    scoring_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    scoring_max_concurrency: int = DEFAULT_SCORING_MAX_CONCURRENCY
    scoring_max_queue_wait_ms: int = DEFAULT_SCORING_MAX_QUEUE_WAIT_MS
    scoring_burst_ms: int = DEFAULT_SCORING_BURST_MS
    scoring_access_log: bool = False
    scoring_fast_route: bool = True
    scoring_route_front: bool = True
    partitions_start: date = date(2024, 1, 1)
    feature_shards: int = 1
    training_as_of: datetime | None = None
    redis_ca_cert: str | None = None
    secrets_in_env: frozenset[str] = frozenset()
    delta_option_variables: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model_source is not None and self.model_source not in MODEL_SOURCES:
            raise SettingsError(
                f"FRAUD_PLATFORM_MODEL_SOURCE={self.model_source!r} is not one of "
                f"{', '.join(MODEL_SOURCES)} (or unset)"
            )
        if self.scoring_workers < 1:
            raise SettingsError(f"FRAUD_PLATFORM_SCORING_WORKERS={self.scoring_workers} is < 1")
        if self.scoring_max_concurrency < 0:
            raise SettingsError(
                f"FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY={self.scoring_max_concurrency} is < 0"
            )
        if self.scoring_max_queue_wait_ms < 0:
            raise SettingsError(
                f"FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS={self.scoring_max_queue_wait_ms} is < 0"
            )
        if self.scoring_burst_ms < 0:
            raise SettingsError(f"FRAUD_PLATFORM_SCORING_BURST_MS={self.scoring_burst_ms} is < 0")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(_env(env, "FRAUD_PLATFORM_DATA_DIR") or ".fraud_platform").absolute()
        option_variables = {
            key.removeprefix(DELTA_OPTION_PREFIX).lower(): key
            for key in env
            if key.startswith(DELTA_OPTION_PREFIX)
        }
        storage_options = {option: env[key] for option, key in option_variables.items()}
        dagster_home = _env(env, "DAGSTER_HOME")
        return cls(
            data_dir=data_dir,
            kafka_bootstrap_servers=_env(env, "KAFKA_BOOTSTRAP_SERVERS"),
            redis_url=validate_redis_url(_env(env, "REDIS_URL") or DEFAULT_REDIS_URL),
            delta_root=_env(env, "FRAUD_PLATFORM_DELTA_ROOT"),
            dagster_home=Path(dagster_home).absolute() if dagster_home else None,
            dagster_postgres_url=_env(env, "FRAUD_PLATFORM_DAGSTER_PG_URL"),
            broker=_env(env, "FRAUD_PLATFORM_BROKER") or "noida",
            embedded_kafka_port=_int(env, "FRAUD_PLATFORM_KAFKA_PORT", 19092),
            service_port=_int(env, "FRAUD_PLATFORM_SERVICE_PORT", 3030),
            ui_port=_int(env, "FRAUD_PLATFORM_UI_PORT", 3000),
            model_source=_env(env, "FRAUD_PLATFORM_MODEL_SOURCE"),
            delta_storage_options=storage_options,
            alert_webhook=_env(env, "FRAUD_PLATFORM_ALERT_WEBHOOK") is not None,
            ui_url=_env(env, "FRAUD_PLATFORM_UI_URL"),
            profiles_pg_url=_env(env, "FRAUD_PLATFORM_PROFILES_PG_URL") or DEFAULT_PROFILES_PG_URL,
            decision_log_buffer=_int(env, "FRAUD_PLATFORM_DECISION_LOG_BUFFER", 100_000),
            scoring_workers=_int(env, "FRAUD_PLATFORM_SCORING_WORKERS", os.cpu_count() or 1),
            scoring_max_concurrency=_int(
                env, "FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY", DEFAULT_SCORING_MAX_CONCURRENCY
            ),
            scoring_max_queue_wait_ms=_int(
                env, "FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS", DEFAULT_SCORING_MAX_QUEUE_WAIT_MS
            ),
            scoring_burst_ms=_int(env, "FRAUD_PLATFORM_SCORING_BURST_MS", DEFAULT_SCORING_BURST_MS),
            scoring_access_log=_bool(env, "FRAUD_PLATFORM_SCORING_ACCESS_LOG", False),
            scoring_fast_route=_bool(env, "FRAUD_PLATFORM_SCORING_FAST_ROUTE", True),
            scoring_route_front=_bool(env, "FRAUD_PLATFORM_SCORING_ROUTE_FRONT", True),
            partitions_start=_date(env, "FRAUD_PLATFORM_PARTITIONS_START", date(2024, 1, 1)),
            feature_shards=_int(env, "FRAUD_PLATFORM_FEATURE_SHARDS", 1),
            training_as_of=_datetime(env, "FRAUD_PLATFORM_TRAINING_AS_OF"),
            redis_ca_cert=_env(env, "FRAUD_PLATFORM_REDIS_CA_CERT"),
            secrets_in_env=frozenset(name for name in SECRET_VARIABLES if _env(env, name)),
            delta_option_variables=option_variables,
        )

    def ensure_data_dir(self) -> Path:
        """Create the data directory if needed; ``SettingsError`` unless it is a writable
        directory (a write is tried: root passes ``os.access`` on a read-only mount)."""
        shown = f"FRAUD_PLATFORM_DATA_DIR={self.data_dir}"
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise SettingsError(f"{shown} is not a directory")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.data_dir):
                pass
        except OSError as exc:
            raise SettingsError(f"{shown} is not a writable directory: {exc.strerror}") from None
        return self.data_dir

    @property
    def delta_uri(self) -> str:
        """Root of all Delta tables: a local path or an object-store URI (s3://, gs://, az://)."""
        return self.delta_root or str(self.data_dir / "delta")

    @property
    def dagster_home_dir(self) -> Path:
        return self.dagster_home or self.data_dir / "dagster_home"

    @property
    def ui_base_url(self) -> str:
        """The Dagster UI alerts link to: FRAUD_PLATFORM_UI_URL, else the local ``ui`` port."""
        return (self.ui_url or f"http://127.0.0.1:{self.ui_port}").rstrip("/")

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file dbt builds silver and gold into."""
        return self.data_dir / "warehouse.duckdb"

    @property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"

    @property
    def services_dir(self) -> Path:
        return self.data_dir / "services"

    @property
    def kafka_embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.embedded_kafka_port}"
