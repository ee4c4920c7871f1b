"""Redis with a password and TLS: the online snapshot writer (through the Dagster resource),
the stream worker and the scoring service connect with ``rediss://:PASSWORD@host:port/0`` and
the CA file in FRAUD_PLATFORM_REDIS_CA_CERT; a plain-text connection, a wrong password, no
password and an unknown CA are refused with an error that names the cause and hides the
password."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.storage.redis_connection import RedisConnectionError, connect, ping
from fraud_platform.names import MODEL_NAME
from fraud_platform.resources.redis import RedisResource
from tests.integration.security.tls_redis import TlsRedis, tls_redis
from tests.serving.conftest import (
    THRESHOLDS,
    Registered,
    delete_customer,
    platform_model_store,
    start_server,
    stop_server,
    train_tiny_model,
    write_customer,
)

pytestmark = pytest.mark.integration
PASSWORD = f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    with tls_redis(tmp_path_factory.mktemp("tls-redis"), PASSWORD) as running:
        yield running


def _refusal(url: str, ca_cert: Path | None) -> str:
    client = connect(url, ca_cert=str(ca_cert) if ca_cert else None, socket_timeout=3)
    with pytest.raises(RedisConnectionError) as refused:
        ping(client, url)
    message = str(refused.value)
    assert PASSWORD not in message and "wrong-password" not in message
    return message


def test_plain_text_connection_is_refused(server: TlsRedis) -> None:
    message = _refusal(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", None)
    assert "use rediss://" in message


def test_wrong_password_is_refused(server: TlsRedis) -> None:
    url = f"rediss://:wrong-password@127.0.0.1:{server.port}/0"
    message = _refusal(url, server.ca_cert)
    assert "refused the credentials" in message
    assert f"rediss://:***@127.0.0.1:{server.port}/0" in message


def test_no_password_is_refused(server: TlsRedis) -> None:
    message = _refusal(f"rediss://127.0.0.1:{server.port}/0", server.ca_cert)
    assert "requires a password" in message


def test_unknown_ca_is_refused(server: TlsRedis) -> None:
    """Without the CA file the server's certificate cannot be verified: no connection."""
    message = _refusal(server.url, None)
    assert "FRAUD_PLATFORM_REDIS_CA_CERT" in message


def test_a_ca_with_a_plain_text_url_is_a_configuration_error(server: TlsRedis) -> None:
    with pytest.raises(RedisConnectionError, match="not a rediss://"):
        connect(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", ca_cert=str(server.ca_cert))


def test_stream_worker_reports_a_wrong_password_at_start(server: TlsRedis) -> None:
    """The worker builds its client from REDIS_URL and the CA: the password is checked only
    after the TLS handshake with the CA given succeeded."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "fraud_platform.tools.stream_worker",
            "--bootstrap",
            "127.0.0.1:9",
            "--state-dir",
            "/nonexistent-state",
            "--redis-ca-cert",
            str(server.ca_cert),
        ],  # fmt: skip
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": server.url.replace(PASSWORD, "nope")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode != 0
    assert "refused the credentials" in completed.stderr, completed.stderr[-3000:]
    assert "nope" not in completed.stderr


@pytest.fixture(scope="module")
def tls_model(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    data_dir = tmp_path_factory.mktemp("tls-platform")
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
    return Registered(data_dir, data_dir / "bentoml", tag, model, metadata)


def test_snapshot_written_and_transaction_scored_over_tls(
    server: TlsRedis, tls_model: Registered
) -> None:
    resource = RedisResource(url=server.url, ca_cert=str(server.ca_cert))
    resource.check()
    client = resource.client()  # the client the online snapshot asset writes with
    customer = write_customer(client, datetime.now(UTC) - timedelta(minutes=5))
    assert client.connection_pool.connection_kwargs.get("ssl_ca_certs") == str(server.ca_cert)
    scorer = start_server(
        tls_model,
        server.url,
        "tls",
        extra_env={"FRAUD_PLATFORM_REDIS_CA_CERT": str(server.ca_cert)},
    )
    try:
        body = customer.transaction(channel="p2p", counterparty_id=customer.counterparty_id)
        response = httpx.post(f"{scorer.url}/score", json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        # every feature group was found in the TLS Redis: the lookup went through
        assert answer["degraded"] is False, answer["degraded_reason"]
        assert all(age is not None for age in answer["feature_freshness"].values())
        assert PASSWORD not in scorer.log_tail(200_000)
    finally:
        stop_server(scorer)
        delete_customer(client, customer)
