"""One settings object, read from the environment, with embedded defaults.

This is the only module that reads environment variables. Everything else receives a
``Settings`` (or a Dagster resource built from one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PROFILES_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    """Where data lives and which external systems to talk to.

    ``kafka_bootstrap_servers`` / ``redis_url`` left unset mean "embedded": the platform starts a
    local Kafka-protocol broker and uses (or starts) a local Redis.

    ``profiles_pg_url`` (FRAUD_PLATFORM_PROFILES_PG_URL, default
    ``postgresql://postgres@127.0.0.1:5432/test``) is the libpq URL of the PostgreSQL database
    holding the ``account_profiles`` table read into ``bronze/account_profiles``.
    """

    data_dir: Path = Path(".fraud_platform")
    kafka_bootstrap_servers: str | None = None
    redis_url: str | None = None
    delta_root: str | None = None
    dagster_home: Path | None = None
    dagster_postgres_url: str | None = None
    broker: str = "noida"
    embedded_kafka_port: int = 19092
    embedded_redis_port: int = 16379
    service_port: int = 3030
    ui_port: int = 3000
    delta_storage_options: dict[str, str] = field(default_factory=dict)
    alert_webhook: bool = False  # the URL itself stays a secret, read by Dagster's EnvVar
    profiles_pg_url: str | None = DEFAULT_PROFILES_PG_URL

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(_env(env, "FRAUD_PLATFORM_DATA_DIR") or ".fraud_platform").absolute()
        storage_options = {
            key.removeprefix("FRAUD_PLATFORM_DELTA_OPT_").lower(): value
            for key, value in env.items()
            if key.startswith("FRAUD_PLATFORM_DELTA_OPT_")
        }
        dagster_home = _env(env, "DAGSTER_HOME")
        return cls(
            data_dir=data_dir,
            kafka_bootstrap_servers=_env(env, "KAFKA_BOOTSTRAP_SERVERS"),
            redis_url=_env(env, "REDIS_URL"),
            delta_root=_env(env, "FRAUD_PLATFORM_DELTA_ROOT"),
            dagster_home=Path(dagster_home).absolute() if dagster_home else None,
            dagster_postgres_url=_env(env, "FRAUD_PLATFORM_DAGSTER_PG_URL"),
            broker=_env(env, "FRAUD_PLATFORM_BROKER") or "noida",
            embedded_kafka_port=int(_env(env, "FRAUD_PLATFORM_KAFKA_PORT") or 19092),
            embedded_redis_port=int(_env(env, "FRAUD_PLATFORM_REDIS_PORT") or 16379),
            service_port=int(_env(env, "FRAUD_PLATFORM_SERVICE_PORT") or 3030),
            ui_port=int(_env(env, "FRAUD_PLATFORM_UI_PORT") or 3000),
            delta_storage_options=storage_options,
            alert_webhook=_env(env, "FRAUD_PLATFORM_ALERT_WEBHOOK") is not None,
            profiles_pg_url=_env(env, "FRAUD_PLATFORM_PROFILES_PG_URL") or DEFAULT_PROFILES_PG_URL,
        )

    @property
    def delta_uri(self) -> str:
        """Root of all Delta tables: a local path or an object-store URI (s3://, gs://, az://)."""
        return self.delta_root or str(self.data_dir / "delta")

    @property
    def dagster_home_dir(self) -> Path:
        return self.dagster_home or self.data_dir / "dagster_home"

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file dbt builds silver and gold into."""
        return self.data_dir / "warehouse.duckdb"

    @property
    def bentoml_home(self) -> Path:
        return self.data_dir / "bentoml"

    @property
    def score_log_dir(self) -> Path:
        return self.data_dir / "score_log"

    @property
    def services_dir(self) -> Path:
        return self.data_dir / "services"

    @property
    def kafka_embedded(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.embedded_kafka_port}"
