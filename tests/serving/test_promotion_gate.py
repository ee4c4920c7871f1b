"""The champion-vs-challenger gate through the real Dagster asset + check, against a running
``bentoml serve``: a worse challenger is not promoted (the service keeps the champion); a
better one is, and the same server process serves it within seconds."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import polars as pl
import pytest

from fraud_platform.defs.serving.assets import GATE_CHECK, fraud_catboost_champion
from fraud_platform.defs.training.assets import TRAINING_SET_TABLE
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import fit as training
from fraud_platform.lib.training import promotion
from fraud_platform.resources import ModelStoreResource

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
    synthetic_rows,
)

pytestmark = pytest.mark.serving

SWAP_DEADLINE_S = 10.0
SPLIT = {"test_days": 5.0, "validation_days": 3.0, "gap_days": 1.0}


def time_ordered_frame(n: int = 4_000, days: int = 20, seed: int = 3) -> pl.DataFrame:
    """A point-in-time training set: every FRAUD_SCORING_V1 feature, labels, event times."""
    rows, labels = synthetic_rows(n, seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(days=days) / n
    rng = random.Random(seed)
    records = []
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        records.append(
            {
                "transaction_id": f"t{i:06d}",
                "event_time": start + step * i,
                "is_fraud": bool(label),
                "fraud_type": rng.choice(["card_testing", "account_takeover"]) if label else None,
                **row,
            }
        )
    return pl.DataFrame(records, infer_schema_length=None)


def train_and_register(
    store: ModelStoreResource, frame: pl.DataFrame, version: int, *, good: bool
) -> str:
    config = training.TrainConfig(
        iterations=150 if good else 2, depth=4 if good else 1, seed=1, **SPLIT
    )
    if not good:  # labels shuffled: no signal at all
        shuffled = frame["is_fraud"].sample(fraction=1.0, shuffle=True, seed=9)
        frame = frame.with_columns(shuffled.alias("is_fraud"))
    split = training.time_split(frame, config)
    trained = training.train_model(
        split,
        FRAUD_SCORING_V1.numeric_features,
        list(FRAUD_SCORING_V1.categorical_features),
        config,
    )
    return store.save_catboost(
        MODEL_NAME,
        trained.model,
        metadata={
            "features": list(trained.features),
            "categorical_features": list(trained.categorical),
            "thresholds": THRESHOLDS,
            "metrics": {"kind": "good" if good else "worse"},
            "params": trained.params,
            "training_set_table": TRAINING_SET_TABLE,
            "training_set_delta_version": version,
            "split": split.summary(),
        },
        labels={"stage": "candidate"},
    )


class Platform:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.store = platform_model_store(data_dir)
        self.delta = DeltaStore(str(data_dir / "delta"))
        self.frame = time_ordered_frame()
        self.version = self.delta.overwrite(TRAINING_SET_TABLE, self.frame)
        self.good = train_and_register(self.store, self.frame, self.version, good=True)
        self.worse = train_and_register(self.store, self.frame, self.version, good=False)
        self.store.promote(self.good)
        self.instance = dg.DagsterInstance.ephemeral()

    def gate(self, challenger: str, margin: float = 0.005) -> dg.ExecuteInProcessResult:
        """A finished models/fraud_catboost run registered ``challenger``; now the promotion."""
        self.instance.report_runless_asset_event(
            dg.AssetMaterialization(
                asset_key=dg.AssetKey(["models", MODEL_NAME]), metadata={"model_tag": challenger}
            )
        )
        return dg.materialize(
            [fraud_catboost_champion],
            instance=self.instance,
            resources={"delta": self.delta, "model_store": self.store},
            run_config={
                "ops": {
                    "serving__fraud_catboost_champion": {"config": {"margin": margin}},
                }
            },
        )


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Platform:
    return Platform(tmp_path_factory.mktemp("promotion_gate"))


@pytest.fixture(scope="module")
def server(platform: Platform, customer: Customer) -> Iterator[Server]:
    registered = Registered(
        data_dir=platform.data_dir,
        bentoml_home=platform.data_dir / "bentoml",
        tag=platform.good,
        model=None,
        metadata={},
    )
    running = start_server(registered, REDIS_URL, "promotion-gate")
    yield running
    stop_server(running)


def served(server: Server, customer: Customer) -> tuple[str, str]:
    """(/model's tag, /score's model_version)."""
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        info = client.post("/model", json={})
        assert info.status_code == 200, info.text
        scored = client.post("/score", json=customer.transaction())
        assert scored.status_code == 200, scored.text
        return info.json()["model_version"], scored.json()["model_version"]


def gate_result(result: dg.ExecuteInProcessResult) -> tuple[Any, dict[str, Any]]:
    evaluations = result.get_asset_check_evaluations()
    assert [e.check_name for e in evaluations] == [GATE_CHECK]
    evaluation = evaluations[0]
    return evaluation, {k: v.value for k, v in evaluation.metadata.items()}


def test_worse_challenger_is_not_promoted_and_the_champion_keeps_serving(
    platform: Platform, server: Server, customer: Customer
) -> None:
    pid = server.process.pid
    assert served(server, customer) == (platform.good, platform.good)

    result = platform.gate(platform.worse)
    assert result.success  # a refused promotion is an outcome, not a failed run
    evaluation, meta = gate_result(result)
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert meta["decision"] == promotion.KEPT
    assert meta["challenger_tag"] == platform.worse and meta["champion_tag"] == platform.good
    assert meta["challenger_average_precision"] < meta["champion_average_precision"]
    assert meta["margin"] == 0.005 and meta["rows"] > 100 and meta["positives"] > 5
    print(
        f"\nrefused: challenger AP {meta['challenger_average_precision']:.4f} vs champion AP "
        f"{meta['champion_average_precision']:.4f} on {meta['rows']} rows "
        f"({meta['period_start']} .. {meta['period_end']})"
    )
    materialized = result.asset_materializations_for_node("serving__fraud_catboost_champion")
    assert materialized[0].metadata["champion"].value == platform.good

    assert platform.store.champion(MODEL_NAME) == platform.good
    time.sleep(1.5)  # longer than the service's pointer check interval
    assert served(server, customer) == (platform.good, platform.good)
    assert server.process.pid == pid and server.process.poll() is None
    log = platform.store.promotion_log(MODEL_NAME)
    assert log[-1]["decision"] == promotion.KEPT and log[-1]["champion_after"] == platform.good


def test_better_challenger_is_promoted_and_served_without_restart(
    platform: Platform, server: Server, customer: Customer
) -> None:
    pid = server.process.pid
    platform.store.promote(platform.worse)  # the worse model is the champion now
    wait_until(lambda: served(server, customer)[0] == platform.worse, server)

    result = platform.gate(platform.good)
    assert result.success
    evaluation, meta = gate_result(result)
    assert evaluation.passed is True
    assert meta["decision"] == promotion.PROMOTED
    assert meta["challenger_average_precision"] >= meta["champion_average_precision"] + 0.005
    print(
        f"\npromoted: challenger AP {meta['challenger_average_precision']:.4f} vs champion AP "
        f"{meta['champion_average_precision']:.4f} on {meta['rows']} rows"
    )
    assert platform.store.champion(MODEL_NAME) == platform.good

    took = wait_until(lambda: served(server, customer) == (platform.good, platform.good), server)
    print(f"promoted -> served in {took:.2f}s")
    assert server.process.pid == pid and server.process.poll() is None
    assert server.log_tail(1_000_000).count("FraudScorer ready") == 1  # no worker restart
    decisions = [entry["decision"] for entry in platform.store.promotion_log(MODEL_NAME)]
    assert decisions == [promotion.KEPT, promotion.PROMOTED]

    again = platform.gate(platform.good)  # the champion as its own challenger: no change
    evaluation, meta = gate_result(again)
    assert meta["decision"] == promotion.NO_CHANGE and evaluation.passed is True
    assert platform.store.champion(MODEL_NAME) == platform.good


def wait_until(condition, server: Server) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > SWAP_DEADLINE_S:
            pytest.fail(f"not seen within {SWAP_DEADLINE_S:.0f}s:\n{server.log_tail()}")
        time.sleep(0.1)
    return time.monotonic() - started
