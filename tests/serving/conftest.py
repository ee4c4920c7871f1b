"""Fixtures for the scoring tests: a tiny model in a temporary model store, online features in
the real Redis (127.0.0.1:6379), a real Kafka-protocol broker (noida) for the decision log, and
real ``bentoml serve`` processes.

Redis keys follow the fixed online layout, so each session uses its own user/card ids.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import redis

from fraud_platform.lib.contracts.events import SCORES
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import (
    ENTITY_KEY,
    FEATURE_TIME,
    FeatureGroup,
    FeatureService,
)
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.shared import hosts_of
from fraud_platform.lib.features.windows import at_lookup, uniform_totals
from fraud_platform.lib.kafka.admin import ensure_topics
from fraud_platform.lib.model.input import to_model_input
from fraud_platform.names import MODEL_NAME
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from fraud_platform.tools.processes import spawn_logged
from fraud_platform.tools.serving_process import serve_command
from tests.redis_server import redis_db_url

REPO_ROOT = Path(__file__).resolve().parents[2]
# FRAUD_PLATFORM_TEST_REDIS_URL: another database of the shared Redis (e.g. a helper's own)
REDIS_URL = os.environ.get("FRAUD_PLATFORM_TEST_REDIS_URL", redis_db_url(0))

THRESHOLDS = {"review": 0.5, "decline": 0.9}
READY_DEADLINE_S = 120.0  # workers load the model in parallel; on a busy 2-core box ~45 s
CHANNELS = ["card_present", "ecommerce", "p2p", "withdrawal", "deposit"]
CATEGORIES = ["grocery", "travel", "electronics", "gaming", "fuel"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# the model


def synthetic_rows(
    n: int, seed: int, service: FeatureService = FRAUD_SCORING_V1
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Model rows with every feature of ``service``; fraud = big amounts on risky channels."""
    rng = random.Random(seed)
    numeric = service.numeric_features
    rows, labels = [], []
    for _ in range(n):
        row: dict[str, Any] = {
            name: None if rng.random() < 0.2 else rng.uniform(0, 100) for name in numeric
        }
        row["amount"] = rng.lognormvariate(3.5, 1.2)
        row["channel"] = rng.choice(CHANNELS)
        row["merchant_category"] = rng.choice(CATEGORIES)
        for name in FRAUD_SCORING_V1.categorical_features:  # e.g. account_type: no profile
            row.setdefault(name, None)
        risky = row["amount"] > 150 and row["channel"] in ("p2p", "withdrawal")
        rows.append(row)
        labels.append(int(risky or rng.random() < 0.02))
    return rows, np.array(labels)


def train_tiny_model(seed: int = 7, service: FeatureService = FRAUD_SCORING_V1) -> Any:
    from catboost import CatBoostClassifier

    categorical = list(service.categorical_features)
    features = [*service.numeric_features, *categorical]
    rows, labels = synthetic_rows(2_000, seed, service)
    model = CatBoostClassifier(
        iterations=40,
        depth=4,
        random_seed=seed,
        thread_count=1,
        verbose=0,
        allow_writing_files=False,
    )
    model.fit(to_model_input(rows, features, categorical, label=labels))
    return model


@dataclass(frozen=True)
class Registered:
    data_dir: Path
    bentoml_home: Path
    tag: str
    model: Any
    metadata: dict[str, Any]


def platform_model_store(data_dir: Path) -> Any:
    """The model store and registry record of a platform data dir, where the service reads them
    (``Settings``: ``<data dir>/bentoml`` and the Delta root ``<data dir>/delta``)."""
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.resources.model_store import ModelStoreResource

    return ModelStoreResource(
        home=str(data_dir / "bentoml"), delta=DeltaStore(str(data_dir / "delta"))
    )


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """A tiny CatBoost model registered and promoted in a temporary platform data dir."""
    data_dir = tmp_path_factory.mktemp("platform")
    home = data_dir / "bentoml"
    model = train_tiny_model()
    metadata = {
        "features": list(model.feature_names_),
        "categorical_features": list(FRAUD_SCORING_V1.categorical_features),
        "thresholds": THRESHOLDS,
        "metrics": {"test_average_precision": 0.5},
    }
    store = platform_model_store(data_dir)
    tag = store.save_catboost(MODEL_NAME, model, metadata=metadata, labels={"stage": "test"})
    store.promote(tag)
    return Registered(data_dir=data_dir, bentoml_home=home, tag=tag, model=model, metadata=metadata)


# ---------------------------------------------------------------------------------------------
# online features


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the serving tests need Redis at {REDIS_URL}: {exc}")
    yield client
    client.close()


def _group_value(group: FeatureGroup, name: str, feature_time: datetime) -> Any:
    """What the online store serves for ``name`` after ``write_customer``: windowed counts,
    sums, means, deviations, maxima, minima and distinct counts from the row's totals and
    profiles (two events of 40.0, ``uniform_totals``), the rest as written."""
    feature = group.feature(name)
    if at_lookup(feature):
        return {"count": 2, "sum": 80.0, "mean": 40.0, "std": 0.0, "max": 40.0, "min": 40.0}.get(
            feature.function, 2
        )
    dtype = feature.dtype
    if dtype == "ts":
        return feature_time - timedelta(minutes=30)
    if dtype == "int":
        return 2
    return 40.0


@dataclass(frozen=True)
class Customer:
    """Entity ids whose online features were written for this session."""

    user_id: str
    card_id: str
    device_id: str
    country: str
    merchant_id: str
    counterparty_id: str
    feature_time: datetime

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.user_id, self.card_id, self.device_id, self.merchant_id, self.counterparty_id)

    def transaction(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "transaction_id": f"t-{uuid.uuid4().hex[:12]}",
            "user_id": self.user_id,
            "card_id": self.card_id,
            "merchant_id": self.merchant_id,
            "merchant_category": "electronics",
            "amount": 42.5,
            "currency": "EUR",
            "channel": "ecommerce",
            "device_id": self.device_id,
            "ip": "203.0.113.7",
            "country": self.country,
        }
        body.update(overrides)
        return body


def write_customer(client: redis.Redis, feature_time: datetime) -> Customer:
    """Every feature group of the catalog (all versions) for a fresh user/card/device/country."""
    run = uuid.uuid4().hex[:10]
    customer = Customer(
        user_id=f"u-test-{run}",
        card_id=f"c-test-{run}",
        device_id=f"d-test-{run}",
        country="DE",
        merchant_id=f"m-test-{run}",
        counterparty_id=f"p-test-{run}",
        feature_time=feature_time,
    )
    ids = {
        "user_id": customer.user_id,
        "card_id": customer.card_id,
        "device_id": customer.device_id,
        "country": customer.country,
        "merchant_id": customer.merchant_id,
        "counterparty_id": customer.counterparty_id,
    }
    for group in hosts_of(FEATURE_GROUPS):  # a group another serves is read from its rows
        key = KEY_SEPARATOR.join(ids[k] for k in group.entity.join_keys)
        row = {ENTITY_KEY: key, FEATURE_TIME: feature_time}
        row.update({name: _group_value(group, name, feature_time) for name in group.feature_names})
        row.update(uniform_totals(group, 2, 40.0, feature_time - timedelta(days=1), feature_time))
        write_snapshot(client, group, pl.DataFrame([row]))
    return customer


@pytest.fixture(scope="session")
def customer(redis_client: redis.Redis) -> Iterator[Customer]:
    known = write_customer(redis_client, datetime.now(UTC) - timedelta(minutes=5))
    yield known
    delete_customer(redis_client, known)


def delete_customer(client: redis.Redis, customer: Customer) -> None:
    run = customer.user_id.removeprefix("u-test-")  # every id of the customer ends with it
    keys = [
        k
        for k in client.scan_iter(match=f"fp:*test-{run}*", count=10_000)
        if any(i in k.decode() for i in customer.ids)
    ]
    if keys:
        client.delete(*keys)


# ---------------------------------------------------------------------------------------------
# the decision log's broker


@pytest.fixture(scope="session")
def decision_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerSpec]:
    """An embedded noida broker with the ``scores`` topic (never the platform's 19092)."""
    spec = BrokerSpec("noida", free_port(), tmp_path_factory.mktemp("decision-broker"))
    start_broker(spec)
    try:
        ensure_topics(spec.bootstrap, [SCORES], partitions=2, retention_ms=3_600_000)
        yield spec
    finally:
        stop_broker(spec)


# ---------------------------------------------------------------------------------------------
# servers


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path

    def log_tail(self, chars: int = 6_000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_server(
    registered: Registered,
    redis_url: str,
    name: str,
    kafka_bootstrap: str | None = None,
    extra_env: dict[str, str] | None = None,
    workers: int | None = 1,
    src: Path | None = None,
) -> Server:
    """``bentoml serve`` of FraudScorer; decisions go to ``kafka_bootstrap`` (default: a port
    nothing listens on, so a test server never writes into a broker it does not own).
    ``workers=None``: the service's default (one per core). The tests use one worker unless
    they say otherwise: which worker answers a request is then not a variable. ``src``: serve
    the code of another source tree (e.g. an export of main, for benchmarks comparing builds)."""
    port = free_port()
    env = {
        **os.environ,
        **({"PYTHONPATH": str(src)} if src is not None else {}),
        "FRAUD_PLATFORM_DATA_DIR": str(registered.data_dir),
        "BENTOML_HOME": str(registered.bentoml_home),
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap or f"127.0.0.1:{free_port()}",
        "BENTOML_DO_NOT_TRACK": "true",
        **(extra_env or {}),
    }
    if workers is not None:
        env["FRAUD_PLATFORM_SCORING_WORKERS"] = str(workers)
    log_path = registered.data_dir / f"{name}-{port}.log"
    process = spawn_logged(
        serve_command(port), log_path, cwd=src or REPO_ROOT, env=env, append=False
    )
    server = Server(f"http://127.0.0.1:{port}", process, log_path, registered.data_dir)
    deadline = time.monotonic() + READY_DEADLINE_S
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"bentoml serve ({name}) exited with {process.returncode} before it was ready; "
                f"log {log_path}:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_server(server)
            pytest.fail(
                f"bentoml serve ({name}) not ready after {READY_DEADLINE_S:.0f}s; "
                f"log {log_path}:\n{server.log_tail()}"
            )
        time.sleep(0.2)


def stop_server(server: Server, grace_s: float = 15.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it lingers."""
    if server.process.poll() is not None:
        return
    pgid = os.getpgid(server.process.pid)
    os.killpg(pgid, signal.SIGTERM)
    try:
        server.process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        server.process.wait(5)
    try:  # workers of the group that outlived the arbiter
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def scorer(
    registered_model: Registered, customer: Customer, decision_broker: BrokerSpec
) -> Iterator[Server]:
    server = start_server(registered_model, REDIS_URL, "scorer", decision_broker.bootstrap)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def degraded_scorer(registered_model: Registered) -> Iterator[Server]:
    closed_port = free_port()  # nothing listens there
    server = start_server(registered_model, f"redis://127.0.0.1:{closed_port}/0", "degraded")
    yield server
    stop_server(server)
