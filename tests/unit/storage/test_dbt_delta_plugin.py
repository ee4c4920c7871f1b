"""The dbt source plugin's file dataset reads exactly what delta-rs' own dataset reads, on real
local Delta tables, and steps aside where it could not."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
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


def _arrivals(first_offset: int, first_arrival: dt.datetime, day: dt.date) -> pa.Table:
    """Bronze-like rows: ``_offset`` and ``_ingested_at`` grow with arrival, the arrival times
    with sub-millisecond parts (which Delta's statistics drop)."""
    offsets = list(range(first_offset, first_offset + 4))
    return pa.table(
        {
            "_offset": offsets,
            "_ingested_at": [
                first_arrival + dt.timedelta(microseconds=1_337 * i) for i in range(4)
            ],
            "_event_date": [day] * 4,
        },
        schema=pa.schema(
            [
                pa.field("_offset", pa.int64()),
                pa.field("_ingested_at", pa.timestamp("us", tz="UTC")),
                pa.field("_event_date", pa.date32()),
            ]
        ),
    )


def test_arrival_ranges_skip_older_files_and_keep_every_matching_row(tmp_path: Path) -> None:
    path = str(tmp_path / "arrivals")
    start = dt.datetime(2026, 4, 1, 8, tzinfo=dt.UTC)
    for run in range(6):
        arrival = start + dt.timedelta(hours=run, microseconds=371)
        day = dt.date(2026, 4, 1 + run // 2)
        write_deltalake(
            path, _arrivals(10 * run, arrival, day), partition_by=["_event_date"], mode="append"
        )
    table = DeltaTable(path)
    dataset = files_dataset(table)
    assert dataset is not None
    con = duckdb.connect()
    con.register("files", dataset)
    con.register("reference", table.to_pyarrow_dataset())

    def rows(name: str, where: str) -> list[tuple]:
        return con.execute(f"select * from {name} where {where} order by _offset").fetchall()

    last_arrival = start + dt.timedelta(hours=5, microseconds=371 + 1_337 * 3)
    # Just below the newest row's arrival, inside the millisecond the log's max is truncated to.
    just_before = (last_arrival - dt.timedelta(microseconds=1)).isoformat()
    for where in (
        f"_ingested_at > timestamptz '{just_before}'",
        f"_ingested_at > timestamptz '{(start + dt.timedelta(hours=4)).isoformat()}'",
        "_offset >= 33 and _offset < 52",
        "_offset > 1000",
    ):
        assert rows("files", where) == rows("reference", where), where
    assert len(rows("files", f"_ingested_at > timestamptz '{just_before}'")) == 1

    newest = ds.field("_offset") > 45
    assert len(list(dataset.get_fragments(filter=newest))) == 1
    since_hour_four = ds.field("_ingested_at") > pa.scalar(
        start + dt.timedelta(hours=4), pa.timestamp("us", tz="UTC")
    )
    assert len(list(dataset.get_fragments(filter=since_hour_four))) == 2


def test_partition_values_that_need_escaping_read_back(tmp_path: Path) -> None:
    path = str(tmp_path / "escaped")
    write_deltalake(
        path,
        pa.table({"_offset": [1, 2], "kind": ["a b:c/d", "plain"]}),
        partition_by=["kind"],
    )
    table = DeltaTable(path)
    dataset = files_dataset(table)
    assert dataset is not None
    assert sorted(dataset.to_table().to_pylist(), key=lambda row: row["_offset"]) == [
        {"_offset": 1, "kind": "a b:c/d"},
        {"_offset": 2, "kind": "plain"},
    ]
    assert len(list(dataset.get_fragments(filter=ds.field("_offset") > 1))) == 1
