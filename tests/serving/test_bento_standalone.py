"""The bento serves on its own: ``fraud-platform bento build`` packs the champion, and the exported
bento, served by ``bentoml serve`` from a fresh virtual environment outside the repository (only
the bento's own generated requirements installed, working directory outside the repository, no
data directory), scores a transaction over HTTP with the bundled model. The same bento with
``FRAUD_PLATFORM_MODEL_SOURCE=registry`` serves the registry's champion and hot-reloads it.

Real Redis (features written for this module's own entity ids); the decision log points at a
port where no Kafka listens (the service keeps deciding). The venv is made by ``uv`` from its
cache, or PyPI for what is not cached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.layout import online_key
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.shared import hosts_of
from fraud_platform.lib.serving.lookup import FeatureLookup
from fraud_platform.lib.serving.scoring import ScoringModel
from fraud_platform.settings import Settings, SettingsError
from models_bento.model_loading import choose_source
from models_bento.schemas import TransactionRequest

from .conftest import (
    MODEL_NAME,
    REDIS_URL,
    REPO_ROOT,
    THRESHOLDS,
    Customer,
    Server,
    free_port,
    platform_model_store,
    stop_server,
    train_tiny_model,
    write_customer,
)

pytestmark = pytest.mark.serving

BENTOFILE = REPO_ROOT / "models_bento" / "bentofile.yaml"
SWAP_DEADLINE_S = 15.0
# a hang guard, not a timing check: two servers start at once here (conftest's is 60 s for one)
READY_DEADLINE_S = 120.0
# With no Kafka the decision log waits 10 s at shutdown for deliveries that cannot happen
# (DecisionLog.close); nothing to check there, so the servers get a short grace before SIGKILL.
STOP_GRACE_S = 3.0


# ---------------------------------------------------------------------------------------------
# what the bento ships


def test_bento_ships_exactly_the_modules_the_service_imports():
    """The bentofile's include list is the service's import closure (lazy imports included) plus
    the ``__init__.py`` of each package on the way: nothing missing, nothing extra."""
    import grimp

    graph = grimp.build_graph("fraud_platform", "models_bento")
    modules = graph.find_upstream_modules("models_bento.service") | {"models_bento.service"}
    expected: set[str] = set()
    for module in modules:
        parts = module.split(".")
        expected.add("/".join(parts) + ".py")
        for depth in range(1, len(parts)):
            expected.add("/".join(parts[:depth]) + "/__init__.py")
    included = yaml.safe_load(BENTOFILE.read_text())["include"]
    assert all("*" not in entry for entry in included), included
    assert sorted(included) == sorted(expected)
    assert all((REPO_ROOT / path).is_file() for path in included)


def test_model_source_is_the_bundled_model_unless_the_registry_is_asked_for():
    assert Settings.from_env({}).model_source is None
    assert choose_source(None, "fraud_catboost:v1") == "bundled"
    assert choose_source(None, None) == "registry"
    assert choose_source("registry", "fraud_catboost:v1") == "registry"
    assert choose_source("bundled", "fraud_catboost:v1") == "bundled"
    with pytest.raises(RuntimeError, match="carries no model"):
        choose_source("bundled", None)
    with pytest.raises(SettingsError, match="FRAUD_PLATFORM_MODEL_SOURCE='bundle' is not one"):
        Settings.from_env({"FRAUD_PLATFORM_MODEL_SOURCE": "bundle"})


def test_build_without_a_champion_says_what_to_do(tmp_path: Path):
    from fraud_platform.tools.cli_bento import BentoBuildError, build_bento

    with pytest.raises(BentoBuildError, match="no champion of fraud_catboost .*promote one"):
        build_bento(Settings(data_dir=tmp_path))


# ---------------------------------------------------------------------------------------------
# the platform the bento is built from: two models, the older one the champion


@dataclass(frozen=True)
class Platform:
    data_dir: Path
    champion: str
    other: str  # the newest model, not the champion


def register(data_dir: Path, seed: int) -> str:
    model = train_tiny_model(seed)
    metadata = {
        "features": list(model.feature_names_),
        "categorical_features": list(FRAUD_SCORING_V1.categorical_features),
        "thresholds": THRESHOLDS,
        "metrics": {"seed": seed},
    }
    store = platform_model_store(data_dir)
    return store.save_catboost(MODEL_NAME, model, metadata=metadata, labels={"stage": "test"})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    data_dir = tmp_path_factory.mktemp("bento_platform")
    champion = register(data_dir, seed=7)
    other = register(data_dir, seed=11)
    platform_model_store(data_dir).promote(champion)
    return Platform(data_dir, champion, other)


@dataclass(frozen=True)
class Built:
    tag: str
    size_bytes: int
    archive: Path
    build_s: float


@pytest.fixture(scope="module")
def built(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``fraud-platform bento build --export``, as an operator runs it."""
    archive = tmp_path_factory.mktemp("bento_export") / "fraud_scorer.bento"
    cli = Path(sys.executable).with_name("fraud-platform")
    env = {
        **os.environ,
        "FRAUD_PLATFORM_DATA_DIR": str(platform.data_dir),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    started = time.monotonic()
    done = subprocess.run(
        [str(cli), "bento", "build", "--export", str(archive)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    build_s = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"\nbento build + export: {build_s:.1f}s\n{done.stdout}")
    tag = re.search(r"^bento (fraud_scorer:\w+)$", done.stdout, re.M)
    size = re.search(r"^  size .* \((\d+) bytes\)$", done.stdout, re.M)
    assert tag and size, done.stdout
    assert f"model {platform.champion} (the champion)" in done.stdout
    assert archive.is_file()
    return Built(tag.group(1), int(size.group(1)), archive, build_s)


@pytest.fixture(scope="module")
def customer(redis_client: redis.Redis) -> Iterator[Customer]:
    """Online features for this module's own entity ids; removed by exact key afterwards
    (conftest's session-wide ``customer`` SCANs the whole shared Redis to clean up: 30+ s with
    the ~600k keys other runs leave there)."""
    written = write_customer(redis_client, datetime.now(UTC) - timedelta(minutes=5))
    yield written
    ids = {
        "user_id": written.user_id,
        "card_id": written.card_id,
        "device_id": written.device_id,
        "country": written.country,
        "merchant_id": written.merchant_id,
        "counterparty_id": written.counterparty_id,
    }
    keys = [
        online_key(group, KEY_SEPARATOR.join(ids[k] for k in group.entity.join_keys))
        for group in hosts_of(FEATURE_GROUPS)
    ]
    # the country-only group's key is shared by every test customer: leave it to its TTL
    keys = [key for key in keys if any(i in key for i in written.ids)]
    assert redis_client.delete(*keys) == len(keys)


# ---------------------------------------------------------------------------------------------
# a clean environment outside the repository


@dataclass(frozen=True)
class Outside:
    root: Path
    bento_dir: Path
    python: Path
    bentoml: Path


def uv_command() -> list[str]:
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    if probe.returncode == 0:
        return [sys.executable, "-m", "uv"]
    pytest.fail("this test needs uv (`pip install uv`, as scripts/setup.sh does)")


@pytest.fixture(scope="module")
def outside(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Outside:
    root = tmp_path_factory.mktemp("bento_outside")
    assert not root.resolve().is_relative_to(REPO_ROOT.resolve())
    bento_dir = root / "bento"
    with tarfile.open(built.archive) as archive:
        archive.extractall(bento_dir, filter="data")
    requirements = bento_dir / "env" / "python" / "requirements.txt"
    venv = root / "venv"
    uv = uv_command()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    started = time.monotonic()
    subprocess.run(
        [*uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
        cwd=root,
        env=env,
        check=True,
        timeout=120,
    )
    installed = subprocess.run(
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
        + ["-r", str(requirements)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr
    print(f"\nclean venv from the bento's requirements: {time.monotonic() - started:.1f}s")
    return Outside(root, bento_dir, venv / "bin" / "python", venv / "bin" / "bentoml")


def outside_env(outside: Outside, **extra: str) -> dict[str, str]:
    """Nothing from this process's environment but PATH basics: no PYTHONPATH, no venv, no
    data directory."""
    return {
        "PATH": f"{outside.python.parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(outside.root),
        "BENTOML_HOME": str(outside.root / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "REDIS_URL": REDIS_URL,
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "FRAUD_PLATFORM_SCORING_WORKERS": "1",
        **extra,
    }


def spawn_bento(outside: Outside, name: str, **extra_env: str) -> Server:
    """``bentoml serve <bento dir>`` from the clean venv, working directory outside the repo."""
    port = free_port()
    log_path = outside.root / f"{name}-{port}.log"
    command = [str(outside.bentoml), "serve", str(outside.bento_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=outside.root,
            env=outside_env(outside, **extra_env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path, outside.root)


def wait_ready(servers: list[Server]) -> None:
    deadline = time.monotonic() + READY_DEADLINE_S
    waiting = list(servers)
    while waiting:
        for server in list(waiting):
            if server.process.poll() is not None:
                pytest.fail(f"bentoml serve of the bento exited early:\n{server.log_tail()}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=1.0).status_code == 200:
                    waiting.remove(server)
            except httpx.TransportError:
                pass
        if waiting and time.monotonic() > deadline:
            pytest.fail(f"not ready after {READY_DEADLINE_S:.0f}s:\n{waiting[0].log_tail()}")
        time.sleep(0.2)


@dataclass(frozen=True)
class Served:
    bundled: Server  # no data directory: the model packed into the bento
    registry: Server  # FRAUD_PLATFORM_MODEL_SOURCE=registry on the platform's data directory


@pytest.fixture(scope="module")
def served(outside: Outside, platform: Platform, customer: Customer) -> Iterator[Served]:
    """Both modes of the same bento, started side by side (one start-up to wait for)."""
    servers = Served(
        bundled=spawn_bento(outside, "bundled"),
        registry=spawn_bento(
            outside,
            "registry",
            FRAUD_PLATFORM_MODEL_SOURCE="registry",
            FRAUD_PLATFORM_DATA_DIR=str(platform.data_dir),
        ),
    )
    started = time.monotonic()
    try:
        wait_ready([servers.bundled, servers.registry])
        print(f"\nboth servers ready in {time.monotonic() - started:.1f}s")
        yield servers
    finally:
        for server in (servers.bundled, servers.registry):
            stop_server(server, grace_s=STOP_GRACE_S)


# ---------------------------------------------------------------------------------------------
# expected values, from the model file itself


def model_from_files(models_dir: Path, tag: str) -> ScoringModel:
    """The model ``tag`` read straight from its CatBoost file and model.yaml under
    ``models_dir`` (a bento's ``models`` folder or a model store), without BentoML."""
    from catboost import CatBoostClassifier

    name, version = tag.split(":")
    folder = models_dir / name / version
    booster = CatBoostClassifier()
    booster.load_model(str(folder / "saved_model.cbm"))
    metadata = yaml.safe_load((folder / "model.yaml").read_text())["metadata"]
    return ScoringModel.from_metadata(booster, metadata, tag)


def expected_score(scoring: ScoringModel, body: dict[str, Any]) -> tuple[float, str, bool]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        txn = TransactionRequest.model_validate(body).model_dump()
        found = FeatureLookup(client, scoring.service).lookup(txn, scoring.service)
        result = scoring.score(txn, found.values, degraded=found.degraded)
    finally:
        client.close()
    return result.score, result.decision, found.degraded


def risky_transaction(customer: Customer) -> dict[str, Any]:
    return customer.transaction(
        amount=900.0,
        channel="p2p",
        counterparty_id=customer.counterparty_id,
        event_time=datetime.now(UTC).isoformat(),
    )


# ---------------------------------------------------------------------------------------------
# the tests


def test_bento_carries_the_champion(built: Built, outside: Outside, platform: Platform):
    info = yaml.safe_load((outside.bento_dir / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": platform.champion, "model_was_champion": True}
    assert info["envs"] == []  # settings and secrets come from the environment at start
    packed = [m["tag"] for service in info["services"] for m in service["models"]]
    assert packed == [platform.champion]
    name, version = platform.champion.split(":")
    model_file = outside.bento_dir / "models" / name / version / "saved_model.cbm"
    assert model_file.stat().st_size > 10_000
    assert built.size_bytes > model_file.stat().st_size
    # what the venv has comes from the bento's requirements, not from this repository
    probe = subprocess.run(
        [str(outside.python), "-c", "import fraud_platform"],
        cwd=outside.root,
        env=outside_env(outside),
        capture_output=True,
    )
    assert probe.returncode != 0


def test_bento_scores_with_the_bundled_model_on_its_own(
    served: Served, outside: Outside, platform: Platform, customer: Customer
):
    bundled = served.bundled
    body = risky_transaction(customer)
    response = httpx.post(f"{bundled.url}/score", json=body, timeout=10.0)
    assert response.status_code == 200, response.text
    answer = response.json()

    in_bento = model_from_files(outside.bento_dir / "models", platform.champion)
    score, decision, degraded = expected_score(in_bento, body)
    other = model_from_files(platform.data_dir / "bentoml" / "models", platform.other)
    other_score, _, _ = expected_score(other, body)
    assert abs(score - other_score) > 1e-6  # the two models are told apart by this transaction
    assert answer["model_version"] == platform.champion
    assert answer["score"] == pytest.approx(score, abs=1e-9)
    assert answer["decision"] == decision
    assert degraded is False  # every feature group was written for this customer
    assert answer["degraded"] is False

    info = httpx.post(f"{bundled.url}/model", json={}, timeout=10.0).json()
    assert info["model_version"] == platform.champion
    assert info["model_source"] == "bundled"
    assert info["champion"] is True
    # no Kafka for the decision log, and the service still decided
    assert "FraudScorer ready" in bundled.log_tail(1_000_000)


def test_bento_in_registry_mode_hot_reloads_the_champion(
    served: Served, platform: Platform, customer: Customer
):
    server = served.registry
    store = platform_model_store(platform.data_dir)
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        info = client.post("/model", json={}).json()
        assert info["model_source"] == "registry"
        assert info["model_version"] == platform.champion
        store.promote(platform.other)
        try:
            deadline = time.monotonic() + SWAP_DEADLINE_S
            while True:
                answer = client.post("/score", json=risky_transaction(customer)).json()
                if answer["model_version"] == platform.other:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"{platform.other} not served:\n{server.log_tail()}")
                time.sleep(0.2)
            body = risky_transaction(customer)
            answer = client.post("/score", json=body).json()
            other = model_from_files(platform.data_dir / "bentoml" / "models", platform.other)
            score, _, _ = expected_score(other, body)
            assert answer["score"] == pytest.approx(score, abs=1e-9)
            # the bundled server never looks at the registry
            bundled = httpx.post(f"{served.bundled.url}/score", json=body, timeout=10.0)
            assert bundled.json()["model_version"] == platform.champion
        finally:
            store.promote(platform.champion)
