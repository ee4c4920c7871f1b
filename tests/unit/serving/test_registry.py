"""The model registry record on a real local Delta table: events, the champion query, rollback
history, idempotency per run, ordering under concurrent writers, and the cheap change watch."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from fraud_platform.lib.serving import registry
from fraud_platform.lib.serving.registry import (
    GATE_DECISION,
    PROMOTED,
    REGISTERED,
    ROLLED_BACK,
    ModelEvent,
)
from fraud_platform.lib.storage.delta import DeltaStore

NAME = "fraud_catboost"
METADATA = {
    "metrics": {"auc_roc": 0.91, "average_precision": 0.42},
    "training_set_table": "training/fraud_training_set",
    "training_set_delta_version": 7,
    "features": ["amount", "f_user_txn_count_24h"],
    "feature_service": "fraud_scoring_v1",
    "code_version": "0.1.0+abc",
}


@pytest.fixture
def store(tmp_path: Path) -> DeltaStore:
    return DeltaStore(str(tmp_path / "delta"))


def event(tag: str, kind: str, run_id: str | None = None, **kwargs) -> ModelEvent:
    return ModelEvent.about(f"{NAME}:{tag}", METADATA, kind, run_id=run_id, **kwargs)


def test_registry_empty_has_no_champion(store: DeltaStore) -> None:
    assert registry.champion(store, NAME) is None
    assert registry.champions(store, NAME) == []
    assert registry.gate_decisions(store, NAME) == []
    assert registry.events(store, NAME).is_empty()
    assert not store.exists(registry.TABLE)  # reading creates nothing


def test_registry_row_records_the_model_description(store: DeltaStore) -> None:
    version = registry.record(store, [event("a", REGISTERED, run_id="run-1", reason="trained")])
    [row] = registry.events(store, NAME).to_dicts()
    assert row["tag"] == f"{NAME}:a" and row["model_name"] == NAME
    assert (row["event"], row["reason"], row["run_id"]) == (REGISTERED, "trained", "run-1")
    assert json.loads(row["metrics"]) == METADATA["metrics"]
    assert row["training_set_table"] == "training/fraud_training_set"
    assert row["training_set_version"] == 7
    assert row["features"] == ["amount", "f_user_txn_count_24h"]
    assert row["feature_service"] == "fraud_scoring_v1"
    assert row["code_version"] == "0.1.0+abc"
    assert row["recorded_at"].tzinfo is not None
    assert row["registry_version"] == version == store.version(registry.TABLE)


def test_registry_champion_is_the_latest_promotion_or_rollback(store: DeltaStore) -> None:
    registry.record(store, [event("a", REGISTERED), event("b", REGISTERED)])
    registry.record(store, [event("a", PROMOTED)])
    assert registry.champion(store, NAME) == f"{NAME}:a"
    registry.record(store, [event("b", GATE_DECISION), event("b", PROMOTED)])  # one commit
    assert registry.champion(store, NAME) == f"{NAME}:b"
    registry.record(store, [event("c", REGISTERED), event("c", GATE_DECISION)])  # kept
    assert registry.champion(store, NAME) == f"{NAME}:b"
    registry.record(store, [event("a", ROLLED_BACK)])
    assert registry.champion(store, NAME) == f"{NAME}:a"
    assert registry.champion(store, "other_model") is None


def test_registry_champions_stack_follows_promotions_and_rollbacks(store: DeltaStore) -> None:
    for tag in ("a", "b", "c"):
        registry.record(store, [event(tag, PROMOTED)])
    registry.record(store, [event("c", PROMOTED)])  # already the champion: no new level
    assert registry.champions(store, NAME) == [f"{NAME}:{t}" for t in "abc"]
    registry.record(store, [event("b", ROLLED_BACK)])
    assert registry.champions(store, NAME) == [f"{NAME}:a", f"{NAME}:b"]
    registry.record(store, [event("b", ROLLED_BACK)])  # a second rollback from the same state
    assert registry.champions(store, NAME) == [f"{NAME}:a", f"{NAME}:b"]
    registry.record(store, [event("a", ROLLED_BACK)])
    assert registry.champions(store, NAME) == [f"{NAME}:a"]


def test_registry_rerun_of_the_same_run_adds_nothing(store: DeltaStore) -> None:
    gate = [
        event("b", GATE_DECISION, run_id="run-7", details={"decision": "promoted"}),
        event("b", PROMOTED, run_id="run-7"),
    ]
    first = registry.record(store, gate)
    assert first is not None
    assert registry.record(store, gate) is None  # a retried step: nothing new
    assert store.version(registry.TABLE) == first
    assert len(registry.events(store, NAME)) == 2
    # the same event in another run is new; events without a run id are always new
    assert registry.record(store, [event("b", GATE_DECISION, run_id="run-8")]) is not None
    registry.record(store, [event("b", PROMOTED)])
    registry.record(store, [event("b", PROMOTED)])
    assert len(registry.events(store, NAME)) == 5


def test_registry_partial_rerun_writes_only_the_missing_event(store: DeltaStore) -> None:
    registry.record(store, [event("b", GATE_DECISION, run_id="run-9")])
    registry.record(
        store, [event("b", GATE_DECISION, run_id="run-9"), event("b", PROMOTED, "run-9")]
    )
    assert registry.events(store, NAME)["event"].to_list() == [GATE_DECISION, PROMOTED]


def test_registry_gate_decisions_keep_their_details_in_order(store: DeltaStore) -> None:
    registry.record(
        store, [event("b", GATE_DECISION, run_id="r1", details={"decision": "kept champion"})]
    )
    registry.record(
        store, [event("c", GATE_DECISION, run_id="r2", details={"decision": "promoted"})]
    )
    decisions = registry.gate_decisions(store, NAME)
    assert [d["decision"] for d in decisions] == ["kept champion", "promoted"]
    assert [d["run_id"] for d in decisions] == ["r1", "r2"]


def test_registry_refuses_two_champion_events_of_one_model_in_one_commit(
    store: DeltaStore,
) -> None:
    with pytest.raises(ValueError, match="more than one promotion or rollback"):
        registry.record(store, [event("a", PROMOTED), event("b", PROMOTED)])
    with pytest.raises(ValueError, match="unknown registry event"):
        event("a", "deleted")


def test_registry_concurrent_writers_get_distinct_ordered_versions(store: DeltaStore) -> None:
    """Writers racing on one table: every event lands once, and ``registry_version`` is the
    version of the commit that wrote it (so the latest promotion is well defined)."""
    registry.record(store, [event("seed", REGISTERED)])
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            barrier.wait()
            for j in range(3):
                registry.record(store, [event(f"w{i}-{j}", PROMOTED, run_id=f"run-{i}-{j}")])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    frame = registry.events(store, NAME)
    assert len(frame) == 13
    versions = frame["registry_version"].to_list()
    assert versions == sorted(versions) and len(set(versions)) == 13
    assert versions[-1] == store.version(registry.TABLE)
    assert registry.champion(store, NAME) == frame["tag"][-1]


def test_registry_watch_follows_the_latest_version(store: DeltaStore) -> None:
    watch = registry.RegistryWatch(store)
    assert watch.latest() is None  # no table yet
    first = registry.record(store, [event("a", REGISTERED)])
    assert watch.latest() == first
    assert watch.latest() == first
    second = registry.record(store, [event("a", PROMOTED)])
    assert watch.latest() == second == store.version(registry.TABLE) > first
