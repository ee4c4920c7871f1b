"""The dbt source plugin's file dataset reads exactly what delta-rs' own dataset reads, on real
local Delta tables, and steps aside where it could not."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from fraud_platform.lib.storage.dbt_delta_plugin import files_dataset

SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64()),
        pa.field("amount", pa.float64()),
        pa.field("note", pa.string()),
        pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
        pa.field("_event_date", pa.date32()),
    ]
)


def _rows(start: int, days: list[dt.date]) -> pa.Table:
    ids = list(range(start, start + 3 * len(days)))
    return pa.table(
        {
            "id": ids,
            "amount": [i * 1.25 for i in ids],
            "note": [None if i % 4 == 0 else f"n{i}" for i in ids],
            "_ingested_at": [
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=i) for i in ids
            ],
            "_event_date": [day for day in days for _ in range(3)],
        },
        schema=SCHEMA,
    )


def _sorted(con: duckdb.DuckDBPyConnection, name: str, where: str = "true") -> list[tuple]:
    return con.execute(f"select * from {name} where {where} order by id").fetchall()


@pytest.fixture
def table(tmp_path: Path) -> DeltaTable:
    path = str(tmp_path / "bronze" / "things")
    days = [dt.date(2026, 1, d) for d in (1, 2, 3)]
    write_deltalake(path, _rows(0, days), partition_by=["_event_date"])
    write_deltalake(path, _rows(100, days[1:]), partition_by=["_event_date"], mode="append")
    write_deltalake(
        path, _rows(200, [dt.date(2026, 1, 9)]), partition_by=["_event_date"], mode="append"
    )
    DeltaTable(path).delete("id = 101")  # rewrites a file: the old one must not be read
    return DeltaTable(path)


def test_file_dataset_reads_the_same_rows_and_types_as_delta_rs(table: DeltaTable) -> None:
    dataset = files_dataset(table)
    assert dataset is not None
    assert dataset.schema == table.to_pyarrow_dataset().schema
    con = duckdb.connect()
    con.register("files", dataset)
    con.register("reference", table.to_pyarrow_dataset())
    rows = _sorted(con, "files")
    assert rows == _sorted(con, "reference")
    assert len(rows) == 9 + 6 - 1 + 3
    assert 101 not in {row[0] for row in rows}
    assert {row[-1] for row in rows} == {dt.date(2026, 1, d) for d in (1, 2, 3, 9)}
    for where in ("_event_date <= date '2026-01-02'", "id > 150", "note is null"):
        assert _sorted(con, "files", where) == _sorted(con, "reference", where), where


def test_file_dataset_of_an_unpartitioned_table(tmp_path: Path) -> None:
    path = str(tmp_path / "flat")
    write_deltalake(path, _rows(0, [dt.date(2026, 2, 1)]))
    table = DeltaTable(path)
    dataset = files_dataset(table)
    assert dataset is not None
    assert dataset.to_table().sort_by("id") == table.to_pyarrow_dataset().to_table().sort_by("id")


def test_tables_with_deletion_vectors_go_to_the_built_in_plugin(tmp_path: Path) -> None:
    path = str(tmp_path / "dv")
    write_deltalake(
        path,
        _rows(0, [dt.date(2026, 3, 1)]),
        configuration={"delta.enableDeletionVectors": "true"},
    )
    table = DeltaTable(path)
    assert table.protocol().min_reader_version > 1
    assert files_dataset(table) is None
