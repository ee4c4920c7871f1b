"""Stream worker processes on the real broker (noida) and the real Redis, under unique names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    TRANSACTIONS,
    encode_event,
    event_key,
)
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.kafka import producer
from fraud_platform.lib.kafka.admin import admin_config, ensure_topics
from fraud_platform.lib.streaming.health import heartbeat_key
from fraud_platform.lib.streaming.verify import online_mismatches
from fraud_platform.tools.brokers import BrokerSpec
from tests.redis_server import redis_db_url

# STREAM_TEST_REDIS_URL: another database of the shared Redis (parallel sessions)
REDIS_URL = os.environ.get("STREAM_TEST_REDIS_URL", redis_db_url(0))


@dataclass
class StreamRig:
    bootstrap: str
    prefix: str  # of entity ids, topics, the consumer group and the stores
    folder: Path
    topics: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    redis_url: str = REDIS_URL  # a redis+cluster:// URL for the Redis Cluster tests

    def start_worker(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "fraud_platform.tools.stream_worker",
            "--bootstrap",
            self.bootstrap,
            "--redis-url",
            self.redis_url,
            "--state-dir",
            str(self.folder / f"state{len(self.workers)}"),
            "--group",
            f"{self.prefix}group",
            "--store-prefix",
            f"test:{self.prefix}",
        ]
        for contract, name in self.topics.items():
            command += ["--topic", f"{contract}={name}"]
        log = (self.folder / f"worker{len(self.workers)}.log").open("ab")
        worker = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(worker)
        return worker

    def produce(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        messages = [
            producer.Message(self.topics[topic], encode_event(e), key=event_key(topic, e))
            for topic, e in events
        ]
        config = {**admin_config(self.bootstrap), "linger.ms": 5}
        producer.produce(self.bootstrap, messages, config=config, flush_timeout_s=30)
        for topic, event in events:
            self.sent.setdefault(topic, []).append(event)

    def wait_applying(self, client: redis.Redis, started_ms: int, timeout_s: float = 120) -> bool:
        """Wait until a worker of the group applied a batch after ``started_ms`` (its heartbeat):
        the worker has joined the group and is in its processing loop."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = client.hget(heartbeat_key(f"{self.prefix}group"), "last_batch_ms")
            if last is not None and int(last) >= started_ms:
                return True
            time.sleep(0.05)
        return False

    def wait_exact(self, client: redis.Redis, timeout_s: float = 300) -> tuple[int, int, list[str]]:
        """Poll until every online row equals the reference (or the deadline); the last check.

        A worker started after kill -9s may wait for the killed members' sessions and open
        transactions to expire before it consumes (seen: 0 events in its first 94 s on a loaded
        machine), hence a generous deadline; it returns as soon as the rows are exact.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            result = online_mismatches(client, FEATURE_GROUPS, self.sent)
            if result[1] == 0 or time.monotonic() > deadline:
                return result
            time.sleep(1)


def kill9(worker: subprocess.Popen[bytes]) -> None:
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)


@pytest.fixture
def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    client.ping()
    return client


@pytest.fixture
def stream_rig(
    kafka_broker: BrokerSpec, tmp_path: Path, redis_client: redis.Redis
) -> Iterator[StreamRig]:
    prefix = f"st{uuid.uuid4().hex[:8]}-"
    topics = {TRANSACTIONS: f"{prefix}transactions", ACCOUNT_EVENTS: f"{prefix}account_events"}
    ensure_topics(kafka_broker.bootstrap, {n: 3 for n in topics.values()}, retention_ms=3_600_000)
    rig = StreamRig(kafka_broker.bootstrap, prefix, tmp_path, topics)
    try:
        yield rig
    finally:
        for worker in rig.workers:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(15)
                except subprocess.TimeoutExpired:
                    kill9(worker)
        for key in redis_client.scan_iter(match=f"*{prefix}*", count=5000):
            redis_client.delete(key)


StartWorker = Callable[[], subprocess.Popen[bytes]]
