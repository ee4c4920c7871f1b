"""Embedded services (``fraud-platform services up|down|status``): the Kafka-protocol broker
when KAFKA_BOOTSTRAP_SERVERS is unset, and a private ``redis-server`` when ``Settings.redis_url``
is on loopback and nothing answers there. ``down`` stops only what ``up`` started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from fraud_platform.lib.features.online.client import redis_client
from fraud_platform.lib.kafka import admin as kafka_admin
from fraud_platform.settings import Settings, redact_url
from fraud_platform.tools import brokers
from fraud_platform.tools.processes import spawn_logged

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServicesError(RuntimeError):
    """An embedded service cannot be started; the message is one line saying what to do."""


def broker_spec(settings: Settings) -> brokers.BrokerSpec:
    return brokers.BrokerSpec(
        kind=settings.broker,  # type: ignore[arg-type]
        port=settings.embedded_kafka_port,
        data_dir=settings.services_dir / settings.broker,
    )


def _redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        return bool(redis_client(url, socket_connect_timeout=timeout_s).ping())
    except redis.RedisError:
        return False


def _loopback_address(url: str) -> tuple[str, int] | None:
    """(host, port) of a plain ``redis://`` URL on this machine, else None (TLS, a unix socket
    or another host is never ours to start)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if parts.scheme != "redis" or host not in LOOPBACK_HOSTS:
        return None
    return ("::1" if host == "::1" else "127.0.0.1"), parts.port or 6379


def _listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Something accepts TCP connections there (a Redis that wants a password included)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _redis_folder(settings: Settings) -> Path:
    return settings.services_dir / "redis"


def start_private_redis(settings: Settings, timeout_s: float = 10.0) -> bool:
    """Run a private ``redis-server`` (no persistence) at the configured URL when that URL is on
    loopback and nothing listens there; True if this call started one."""
    address = _loopback_address(settings.redis_url)
    if address is None or _listening(*address):
        return False
    host, port = address
    shown = redact_url(settings.redis_url)
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServicesError(
            f"nothing answers at {shown} and redis-server is not installed: "
            "install Redis or set REDIS_URL"
        )
    folder = _redis_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            host,
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
        if _listening(host, port):
            return True
        time.sleep(0.1)
    raise ServicesError(f"the private Redis did not answer at {shown}; see {folder / 'redis.log'}")


def _private_redis_pid(settings: Settings) -> int | None:
    """The pid of the redis-server ``services up`` started, if it still runs."""
    try:
        pid = int((_redis_folder(settings) / "redis.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"redis-server" in cmdline and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a daemon whose reaper does not reap stays a zombie


def stop_private_redis(settings: Settings, timeout_s: float = 10.0) -> bool:
    """SIGTERM the redis-server ``services up`` started (never another one); False if none runs."""
    pid = _private_redis_pid(settings)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    (_redis_folder(settings) / "redis.pid").unlink(missing_ok=True)
    return pid is not None


@dataclass
class ServiceStatus:
    kafka_bootstrap: str
    kafka_embedded: bool
    kafka_reachable: bool
    kafka_detail: str
    redis_url: str
    redis_reachable: bool
    stream_worker_pid: int | None = None

    def lines(self) -> list[str]:
        kind = "embedded" if self.kafka_embedded else "external"
        return [
            f"kafka  {self.kafka_bootstrap} ({kind}): "
            + ("up" if self.kafka_reachable else f"DOWN ({self.kafka_detail})"),
            f"redis  {self.redis_url}: " + ("up" if self.redis_reachable else "DOWN"),
            "stream "
            + (
                f"worker pid {self.stream_worker_pid}"
                if self.stream_worker_pid
                else "worker not running (`fraud-platform stream` or `services up`)"
            ),
        ]


def services_up(settings: Settings, *, stream_worker: bool = False) -> ServiceStatus:
    """Start what is embedded and not running (the stream worker when asked); check what is
    external. Idempotent."""
    if settings.kafka_embedded:
        brokers.start_broker(broker_spec(settings))
    kafka_admin.check_kafka(settings.kafka_bootstrap)
    start_private_redis(settings)
    if stream_worker:
        start_stream_worker(settings)
    return services_status(settings)


def _stream_folder(settings: Settings) -> Path:
    return settings.services_dir / "stream"


def stream_worker_pid(settings: Settings) -> int | None:
    """The pid of the stream worker ``services up`` started, if it still runs."""
    try:
        pid = int((_stream_folder(settings) / "worker.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"stream_worker" in cmdline and _alive(pid) else None


def start_stream_worker(settings: Settings) -> int:
    """Start ``fraud-platform stream`` as a managed child (log and pid under the services
    folder) unless one runs; returns its pid."""
    from fraud_platform.tools.stream_worker import ensure_platform_topics

    running = stream_worker_pid(settings)
    if running is not None:
        return running
    ensure_platform_topics(settings.kafka_bootstrap)
    folder = _stream_folder(settings)
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "fraud_platform.tools.stream_worker",
        "--bootstrap",
        settings.kafka_bootstrap,
        "--redis-url",
        settings.redis_url,
        "--state-dir",
        str(folder / "state"),
    ]
    # one core per worker (scale out with more workers in the group): polars would otherwise
    # take every core at each checkpoint from the scoring service beside it. Not measured to
    # matter yet: /score p50 was 337 ms without it and 640 ms with it in `demo --realtime`,
    # both at load 10-13 from other jobs on the 2 cores
    env = {**os.environ, "POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS", "1")}
    process = spawn_logged(command, folder / "worker.log", env=env)
    time.sleep(0.5)
    if process.poll() is not None:
        raise ServicesError(f"the stream worker exited at once; see {folder / 'worker.log'}")
    (folder / "worker.pid").write_text(str(process.pid))
    return process.pid


def stop_stream_worker(settings: Settings, timeout_s: float = 15.0) -> bool:
    """SIGTERM the stream worker ``services up`` started (SIGKILL after ``timeout_s``)."""
    pid = stream_worker_pid(settings)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    (_stream_folder(settings) / "worker.pid").unlink(missing_ok=True)
    return pid is not None


def started_services(settings: Settings) -> list[str]:
    """What ``services up`` started with this data directory and is still running."""
    running = []
    if stream_worker_pid(settings) is not None:
        running.append("the stream worker")
    if settings.kafka_embedded and brokers.broker_status(broker_spec(settings))["running"]:
        running.append(f"the embedded Kafka broker ({settings.kafka_bootstrap})")
    if _private_redis_pid(settings) is not None:
        running.append(f"the private Redis ({redact_url(settings.redis_url)})")
    return running


def services_down(settings: Settings) -> list[str]:
    stopped = []
    if stop_stream_worker(settings):
        stopped.append("stream worker")
    if settings.kafka_embedded and brokers.stop_broker(broker_spec(settings)):
        stopped.append(f"kafka ({settings.broker})")
    if stop_private_redis(settings):
        stopped.append("redis (private)")
    return stopped


def services_status(settings: Settings) -> ServiceStatus:
    try:
        kafka_admin.check_kafka(settings.kafka_bootstrap, timeout_s=3)
        reachable, detail = True, ""
    except Exception as exc:  # noqa: BLE001 - reported to the user as the status detail
        reachable, detail = False, str(exc)
    return ServiceStatus(
        kafka_bootstrap=settings.kafka_bootstrap,
        kafka_embedded=settings.kafka_embedded,
        kafka_reachable=reachable,
        kafka_detail=detail,
        redis_url=redact_url(settings.redis_url),
        redis_reachable=_redis_answers(settings.redis_url),
        stream_worker_pid=stream_worker_pid(settings),
    )
