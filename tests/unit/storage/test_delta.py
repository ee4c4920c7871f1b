"""The one Delta access layer on real local tables: the exactly-once commit, and creation that
stays single when two writers find a table missing at the same moment."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from fraud_platform.lib.storage.delta import DeltaStore, commit, recorded_versions

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False)])


@pytest.fixture
def store(tmp_path: Path) -> DeltaStore:
    return DeltaStore(str(tmp_path))


def test_delta_commit_makes_rows_transactions_and_metadata_visible_together(
    store: DeltaStore,
) -> None:
    table = store.open_or_create("bronze/things", SCHEMA)
    rows = pa.table({"id": [1, 2, 3]}, schema=SCHEMA)
    version = commit(
        table, rows, transactions={"app.a": 7, "app.b": 9}, metadata={"info": json.dumps([1])}
    )
    assert version == 1 == store.version("bronze/things")
    assert store.row_count("bronze/things") == 3
    reopened = store.open("bronze/things")
    assert recorded_versions(reopened, ["app.a", "app.b", "app.c"]) == {"app.a": 7, "app.b": 9}
    assert reopened.history(1)[0]["info"] == "[1]"


def test_delta_commit_on_a_stale_snapshot_with_the_same_app_id_conflicts(
    store: DeltaStore,
) -> None:
    first = store.open_or_create("t", SCHEMA)
    second = store.open("t")  # both read the same snapshot
    commit(first, pa.table({"id": [1]}, schema=SCHEMA), transactions={"app": 1})
    with pytest.raises(Exception, match="Concurrent transaction"):
        commit(second, pa.table({"id": [1]}, schema=SCHEMA), transactions={"app": 1})
    assert store.row_count("t") == 1


def test_delta_open_or_create_races_create_the_table_once(store: DeltaStore) -> None:
    """deltalake 1.6 alone commits the loser's CREATE TABLE again as version 1 (about a third
    of such races here)."""

    def create(name: str, barrier: threading.Barrier, opened: list[int]) -> None:
        barrier.wait()
        opened.append(store.open_or_create(name, SCHEMA).version())

    for round_ in range(30):
        name = f"race_{round_}"
        barrier = threading.Barrier(2)
        opened: list[int] = []
        threads = [threading.Thread(target=create, args=(name, barrier, opened)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert opened == [0, 0], (round_, opened)
        operations = [h["operation"] for h in store.open(name).history()]
        assert operations == ["CREATE TABLE"], (round_, operations)


def test_delta_store_reads_what_it_replaced(store: DeltaStore) -> None:
    import polars as pl

    assert not store.exists("x") and store.version("x") is None and store.row_count("x") == 0
    store.overwrite("x", pl.DataFrame({"id": [1, 2]}), metadata={"why": "test"})
    version = store.replace_where("x", pl.DataFrame({"id": [2, 3]}), "id >= 2")
    assert sorted(store.read("x")["id"].to_list()) == [1, 2, 3]
    assert store.read("x", version=version - 1)["id"].sort().to_list() == [1, 2]
