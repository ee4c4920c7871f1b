"""Fixtures for tests against real Kafka-protocol brokers (noida-db and tansu), no mocks.

``kafka_broker`` starts each embedded broker once per session on a free port; tests create
their own uniquely named topics so they stay independent of each other.
"""

from __future__ import annotations

import gc
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator

import psycopg2
import pytest

from fraud_platform.lib.kafka import producer
from fraud_platform.lib.kafka.admin import admin_config, ensure_topics
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (at the time of asking)."""
    return free_port()


@pytest.fixture(scope="session", params=["noida", "tansu"], ids=["noida", "tansu"])
def kafka_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerSpec]:
    """A running embedded broker; yields its spec (``spec.bootstrap`` to connect)."""
    spec = BrokerSpec(request.param, free_port(), tmp_path_factory.mktemp(request.param))
    start_broker(spec)
    try:
        yield spec
    finally:
        gc.collect()  # drop Kafka clients kept alive by reference cycles: tansu waits for them
        stop_broker(spec)


@pytest.fixture
def make_topic(kafka_broker: BrokerSpec) -> Callable[..., str]:
    """Create a topic with a unique name on the session broker; returns its name."""

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        ensure_topics(kafka_broker.bootstrap, {name: partitions}, retention_ms=3_600_000)
        return name

    return make


@pytest.fixture
def produce(kafka_broker: BrokerSpec) -> Callable[..., None]:
    """Produce payloads to a topic (round-robin over ``partitions`` when given) and flush."""

    def send(topic: str, payloads: Iterable[bytes | None], partitions: int | None = None) -> None:
        messages = (
            producer.Message(topic, payload, partition=index % partitions if partitions else None)
            for index, payload in enumerate(payloads)
        )
        config = {
            **admin_config(kafka_broker.bootstrap),
            "linger.ms": 5,
            "enable.idempotence": False,
        }
        producer.produce(kafka_broker.bootstrap, messages, config=config, flush_timeout_s=30)

    return send


PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database; dropped afterwards. Yields its libpq URL."""
    try:
        admin = psycopg2.connect(f"{PG_SERVER}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 not reachable as role postgres: {exc}")
    admin.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
    name = f"fp_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
