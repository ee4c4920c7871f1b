"""Embedded services: the Kafka-protocol broker and Redis the platform starts when no
production endpoints are configured (``fraud-platform services up|down|status``)."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from fraud_platform.lib.kafka import admin as kafka_admin
from fraud_platform.settings import Settings
from fraud_platform.tools import brokers

DEFAULT_LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def broker_spec(settings: Settings) -> brokers.BrokerSpec:
    return brokers.BrokerSpec(
        kind=settings.broker,  # type: ignore[arg-type]
        port=settings.embedded_kafka_port,
        data_dir=settings.services_dir / settings.broker,
    )


def _redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout_s).ping())
    except redis.RedisError:
        return False


def embedded_redis_url(settings: Settings) -> str:
    return f"redis://127.0.0.1:{settings.embedded_redis_port}/0"


def resolve_redis_url(settings: Settings) -> str:
    """REDIS_URL if set; else the local server on 6379 when it answers; else our own."""
    if settings.redis_url:
        return settings.redis_url
    if _redis_answers(DEFAULT_LOCAL_REDIS):
        return DEFAULT_LOCAL_REDIS
    return embedded_redis_url(settings)


def start_embedded_redis(settings: Settings, timeout_s: float = 10.0) -> str:
    """Run a private ``redis-server`` under the data directory (no persistence)."""
    url = embedded_redis_url(settings)
    if _redis_answers(url):
        return url
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "No Redis answers at 127.0.0.1:6379 and no redis-server binary is installed: "
            "install Redis or set REDIS_URL"
        )
    folder = settings.services_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            "--port",
            str(settings.embedded_redis_port),
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
            "--logfile",
            str(folder / "redis.log"),
            "--pidfile",
            str(folder / "redis.pid"),
        ],
        check=True,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _redis_answers(url):
            return url
        time.sleep(0.1)
    raise RuntimeError(f"embedded Redis did not answer at {url}; see {folder / 'redis.log'}")


@dataclass
class ServiceStatus:
    kafka_bootstrap: str
    kafka_embedded: bool
    kafka_reachable: bool
    kafka_detail: str
    redis_url: str
    redis_reachable: bool

    def lines(self) -> list[str]:
        kind = "embedded" if self.kafka_embedded else "external"
        return [
            f"kafka  {self.kafka_bootstrap} ({kind}): "
            + ("up" if self.kafka_reachable else f"DOWN ({self.kafka_detail})"),
            f"redis  {self.redis_url}: " + ("up" if self.redis_reachable else "DOWN"),
        ]


def services_up(settings: Settings) -> ServiceStatus:
    """Start what is embedded and not running; check what is external. Idempotent."""
    if settings.kafka_embedded:
        brokers.start_broker(broker_spec(settings))
    kafka_admin.check_kafka(settings.kafka_bootstrap)
    redis_url = resolve_redis_url(settings)
    if redis_url == embedded_redis_url(settings):
        start_embedded_redis(settings)
    return services_status(settings)


def services_down(settings: Settings) -> list[str]:
    stopped = []
    if settings.kafka_embedded and brokers.stop_broker(broker_spec(settings)):
        stopped.append(f"kafka ({settings.broker})")
    pidfile = settings.services_dir / "redis" / "redis.pid"
    if pidfile.exists() and _redis_answers(embedded_redis_url(settings)):
        redis.Redis.from_url(embedded_redis_url(settings)).shutdown(nosave=True)
        stopped.append("redis (embedded)")
    return stopped


def services_status(settings: Settings) -> ServiceStatus:
    try:
        kafka_admin.check_kafka(settings.kafka_bootstrap, timeout_s=3)
        reachable, detail = True, ""
    except Exception as exc:  # noqa: BLE001 - reported to the user as the status detail
        reachable, detail = False, str(exc)
    redis_url = resolve_redis_url(settings)
    return ServiceStatus(
        kafka_bootstrap=settings.kafka_bootstrap,
        kafka_embedded=settings.kafka_embedded,
        kafka_reachable=reachable,
        kafka_detail=detail,
        redis_url=redis_url,
        redis_reachable=_redis_answers(redis_url),
    )


def data_dir_ready(settings: Settings) -> Path:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings.data_dir
