"""A running ``bentoml serve`` of FraudScorer picks up a new champion without a restart:
promote, rollback, a champion whose model files are gone (the old model stays), and a champion
pinned to another feature service (the online reader follows it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.services import FRAUD_SCORING_V1, FRAUD_SCORING_V2
from fraud_platform.resources.model_store import ModelStoreResource

from .conftest import (
    MODEL_NAME,
    REDIS_URL,
    THRESHOLDS,
    Customer,
    Registered,
    Server,
    platform_model_store,
    start_server,
    stop_server,
    train_tiny_model,
)

pytestmark = pytest.mark.serving

SWAP_DEADLINE_S = 10.0


def register(store: ModelStoreResource, seed: int, service: FeatureService | None = None) -> str:
    """A tiny model; without ``service`` its metadata names none (a pre-services model: v1)."""
    model = train_tiny_model(seed, service or FRAUD_SCORING_V1)
    metadata: dict[str, Any] = {
        "features": list(model.feature_names_),
        "categorical_features": list(FRAUD_SCORING_V1.categorical_features),
        "thresholds": THRESHOLDS,
        "metrics": {"test_average_precision": 0.5, "seed": seed},
    }
    if service is not None:
        metadata["feature_service"] = service.name
    return store.save_catboost(MODEL_NAME, model, metadata=metadata, labels={"stage": "test"})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Registered:
    """Its own data dir: this module moves the champion around."""
    data_dir = tmp_path_factory.mktemp("hot_reload")
    home = data_dir / "bentoml"
    store = platform_model_store(data_dir)
    tag = register(store, seed=7)
    store.promote(tag)
    return Registered(data_dir=data_dir, bentoml_home=home, tag=tag, model=None, metadata={})


@pytest.fixture(scope="module")
def store(platform: Registered) -> ModelStoreResource:
    return platform_model_store(platform.data_dir)


@pytest.fixture(scope="module")
def server(platform: Registered, customer: Customer) -> Iterator[Server]:
    running = start_server(platform, REDIS_URL, "hot-reload")
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as http:
        yield http


def served_tag(client: httpx.Client, customer: Customer) -> str:
    response = client.post("/score", json=customer.transaction())
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def model_info(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/model", json={})
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(condition: Callable[[], bool], what: str, server: Server) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > SWAP_DEADLINE_S:
            pytest.fail(f"{what} not seen within {SWAP_DEADLINE_S:.0f}s:\n{server.log_tail()}")
        time.sleep(0.1)
    return time.monotonic() - started


def assert_not_restarted(server: Server, pid: int) -> None:
    assert server.process.poll() is None
    assert server.process.pid == pid
    # __init__ (model load, Redis, score log) ran once: no worker restart either
    assert server.log_tail(1_000_000).count("FraudScorer ready") == 1, server.log_tail()


def test_promote_and_rollback_swap_the_model_without_restart(
    server: Server,
    client: httpx.Client,
    customer: Customer,
    platform: Registered,
    store: ModelStoreResource,
):
    tag_a = platform.tag
    pid = server.process.pid
    assert served_tag(client, customer) == tag_a
    info_a = model_info(client)
    assert info_a["model_version"] == tag_a
    assert info_a["champion"] is True
    assert info_a["reload_error"] is None

    tag_b = register(store, seed=11)
    store.promote(tag_b)
    took = wait_for(lambda: served_tag(client, customer) == tag_b, f"champion {tag_b}", server)
    print(f"\npromote -> served in {took:.2f}s")
    info_b = model_info(client)
    assert info_b["model_version"] == tag_b
    assert info_b["metrics"]["seed"] == 11
    assert info_b["loaded_at"] > info_a["loaded_at"]
    assert info_b["reload_error"] is None
    assert_not_restarted(server, pid)

    assert store.rollback(MODEL_NAME) == tag_a
    took = wait_for(lambda: served_tag(client, customer) == tag_a, f"rollback to {tag_a}", server)
    print(f"rollback -> served in {took:.2f}s")
    assert model_info(client)["model_version"] == tag_a
    assert_not_restarted(server, pid)


def test_champion_that_fails_to_load_keeps_the_old_model(
    server: Server,
    client: httpx.Client,
    customer: Customer,
    platform: Registered,
    store: ModelStoreResource,
):
    pid = server.process.pid
    serving = served_tag(client, customer)
    broken = register(store, seed=13)
    model_dir = Path(store.get(broken).path)
    (model_dir / "saved_model.cbm").unlink()  # model.yaml stays: promote accepts the tag
    store.promote(broken)

    wait_for(lambda: model_info(client)["reload_error"] is not None, "reload_error", server)
    info = model_info(client)
    assert info["model_version"] == serving
    assert broken in info["reload_error"]
    for _ in range(5):  # and it keeps answering with the old model
        assert served_tag(client, customer) == serving
    time.sleep(1.2)  # a second check of the same pointer: no second error line
    assert served_tag(client, customer) == serving
    assert server.log_tail(1_000_000).count(f"could not load champion {broken}") == 1

    assert store.rollback(MODEL_NAME) == serving
    wait_for(lambda: model_info(client)["reload_error"] is None, "reload_error cleared", server)
    assert served_tag(client, customer) == serving
    assert_not_restarted(server, pid)


def test_champion_pinned_to_another_service_brings_its_online_reader(
    server: Server,
    client: httpx.Client,
    customer: Customer,
    store: ModelStoreResource,
):
    def freshness() -> dict[str, Any]:
        response = client.post("/score", json=customer.transaction())
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["degraded"] is False, body["degraded_reason"]
        return body["feature_freshness"]

    pid = server.process.pid
    serving = served_tag(client, customer)
    assert set(freshness()) == set(FRAUD_SCORING_V1.group_names)

    pinned = register(store, seed=17, service=FRAUD_SCORING_V2)
    store.promote(pinned)
    wait_for(lambda: served_tag(client, customer) == pinned, f"champion {pinned}", server)
    assert set(freshness()) == set(FRAUD_SCORING_V2.group_names)  # user_txn_velocity_v2
    info = model_info(client)
    assert info["metadata"]["feature_service"] == "fraud_scoring_v2"
    assert "user_amount_min_7d" in info["features"]

    assert store.rollback(MODEL_NAME) == serving
    wait_for(lambda: served_tag(client, customer) == serving, f"rollback to {serving}", server)
    assert set(freshness()) == set(FRAUD_SCORING_V1.group_names)
    assert_not_restarted(server, pid)
