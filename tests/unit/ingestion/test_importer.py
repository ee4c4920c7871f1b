"""Importing Parquet/CSV files into bronze: mapping, stated defaults, the contract's validation
and reasons, dead letters, and exactly once per file content (real Delta tables, local)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from fraud_platform.lib.contracts.events import (
    LABELS,
    TRANSACTIONS,
    RejectedEvent,
    validate_event,
    validate_record,
)
from fraud_platform.lib.ingestion import importer
from fraud_platform.lib.ingestion.import_mapping import (
    FIELD_DEFAULTS,
    MappingError,
    load_mapping,
    parse_pairs,
)
from fraud_platform.lib.ingestion.import_sources import ImportFailed
from fraud_platform.lib.ingestion.importer import import_files
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import DEAD_LETTER_TABLE, bronze_table

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
THIN = {
    "transaction_id": "TRANSACTION_ID",
    "event_time": "TX_DATETIME",
    "card_id": "CUSTOMER_ID",
    "merchant_id": "TERMINAL_ID",
    "amount": "TX_AMOUNT",
}


def thin_frame() -> pl.DataFrame:
    """Five rows like a public card data set; rows 2 and 4 break the contract."""
    return pl.DataFrame(
        {
            "TRANSACTION_ID": [10, 11, 12, 13, 14],
            "TX_DATETIME": [
                datetime(2025, 4, 1, 0, 0, 31),
                datetime(2025, 4, 1, 0, 2, 10),
                datetime(2025, 4, 2, 8, 0, 0),
                datetime(2025, 4, 3, 23, 59, 59),
                datetime(2030, 1, 1),  # in the future
            ],
            "CUSTOMER_ID": [596, 4961, 2, 4128, 927],
            "TERMINAL_ID": [3156, 3412, 1365, 8737, 9906],
            "TX_AMOUNT": [57.16, 81.51, -3.0, 63.3, 12.0],  # -3.0: not > 0
            "TX_FRAUD": [0, 1, 0, 0, 0],
        }
    )


def run(path: Path, store: DeltaStore, contract: str = TRANSACTIONS, **mapping: Any):
    spec = load_mapping(
        contract, columns=mapping.pop("columns", THIN), defaults=mapping.pop("defaults", {})
    )
    return import_files(contract, path, spec, store, now=NOW, progress=lambda _: None)


def bronze(store: DeltaStore, contract: str = TRANSACTIONS) -> pl.DataFrame:
    return store.read(bronze_table(contract)).sort("_offset")


def test_import_parquet_maps_columns_applies_stated_defaults_and_dead_letters_the_rest(
    tmp_path: Path,
) -> None:
    thin_frame().write_parquet(tmp_path / "history.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    result = run(tmp_path / "history.parquet", store, defaults={"currency": "EUR"})
    assert (result.rows, result.accepted, result.rejected) == (5, 3, 2)
    rows = bronze(store)
    assert rows["transaction_id"].to_list() == ["10", "11", "13"]
    assert rows["_offset"].to_list() == [0, 1, 3]
    first = rows.row(0, named=True)
    assert first["event_time"] == datetime(2025, 4, 1, 0, 0, 31, tzinfo=UTC)
    assert first["amount"] == 57.16
    assert (first["card_id"], first["user_id"], first["merchant_id"]) == ("596", "596", "3156")
    assert first["currency"] == "EUR"  # the flag beats the stated default
    assert (first["channel"], first["device_id"], first["ip"], first["country"]) == (
        "card_present",
        "unknown",
        "0.0.0.0",
        "ZZ",
    )
    assert first["merchant_category"] == "unknown" and first["counterparty_id"] is None
    assert str(first["_event_date"]) == "2025-04-01"
    assert first["_topic"] == f"file:{result.files[0].sha256[:20]}"
    dead = store.read(DEAD_LETTER_TABLE).sort("offset")
    assert dead["offset"].to_list() == [2, 4]
    assert dead["reason"][0] == "field 'amount' must be > 0, got -3.0"
    assert "is in the future" in dead["reason"][1]
    assert json.loads(dead["raw_payload"][0])["transaction_id"] == "12"


def test_reasons_are_those_of_the_reference_validator(tmp_path: Path) -> None:
    thin_frame().write_parquet(tmp_path / "h.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    run(tmp_path / "h.parquet", store)
    for payload, reason in store.read(DEAD_LETTER_TABLE).select("raw_payload", "reason").rows():
        with pytest.raises(RejectedEvent) as caught:
            validate_record(TRANSACTIONS, json.loads(payload), NOW)
        assert str(caught.value) == reason


def test_reimport_of_the_same_content_adds_nothing_even_renamed(tmp_path: Path) -> None:
    thin_frame().write_parquet(tmp_path / "a.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    run(tmp_path / "a.parquet", store)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "renamed.parquet").write_bytes((tmp_path / "a.parquet").read_bytes())
    again = run(tmp_path / "copy", store)
    assert (again.accepted, again.rejected, again.files[0].already_imported) == (0, 0, 5)
    assert bronze(store).height == 3
    assert store.read(DEAD_LETTER_TABLE).height == 2


def test_crash_after_a_committed_chunk_resumes_without_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thin_frame().write_parquet(tmp_path / "a.parquet", row_group_size=1)
    store = DeltaStore(str(tmp_path / "delta"))
    monkeypatch.setattr(importer, "COMMIT_ROWS", 2)
    real_commit = importer.commit
    calls = {"bronze": 0}

    def crash_on_second_bronze_chunk(table: Any, rows: Any, **kwargs: Any) -> int:
        if any(app.startswith("fraud_platform.import.") for app in kwargs["transactions"]):
            calls["bronze"] += 1
            if calls["bronze"] == 2:
                raise RuntimeError("killed")
        return real_commit(table, rows, **kwargs)

    monkeypatch.setattr(importer, "commit", crash_on_second_bronze_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "a.parquet", store)
    # The first chunk (rows 0-1) is committed; rows 2-3's dead letter (row 2) too, not its rows.
    assert bronze(store)["_offset"].to_list() == [0, 1]
    monkeypatch.setattr(importer, "commit", real_commit)
    resumed = run(tmp_path / "a.parquet", store)
    assert resumed.files[0].already_imported == 2
    assert bronze(store)["_offset"].to_list() == [0, 1, 3]
    assert sorted(store.read(DEAD_LETTER_TABLE)["offset"].to_list()) == [2, 4]


def test_csv_with_text_times_with_and_without_offset(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(
        "id,ts,user,card,merchant,amount,ccy\n"
        "a1,2025-04-01 10:00:00,u1,c1,m1,10.5,EUR\n"
        "a2,2025-04-01T11:00:00+02:00,u1,c1,m1,7,EUR\n"
        "a3,2025-04-01T12:00:00.250000Z,u2,c2,m2,1e3,EUR\n"
        "a4,yesterday,u2,c2,m2,5,EUR\n"
        "a5,2025-04-01 13:00:00,u2,c2,m2,lots,EUR\n"
    )
    store = DeltaStore(str(tmp_path / "delta"))
    columns = {
        "transaction_id": "id",
        "event_time": "ts",
        "user_id": "user",
        "card_id": "card",
        "merchant_id": "merchant",
        "amount": "amount",
        "currency": "ccy",
    }
    result = run(tmp_path / "t.csv", store, columns=columns)
    rows = bronze(store)
    assert rows["event_time"].to_list() == [
        datetime(2025, 4, 1, 10, 0, tzinfo=UTC),
        datetime(2025, 4, 1, 9, 0, tzinfo=UTC),
        datetime(2025, 4, 1, 12, 0, 0, 250000, tzinfo=UTC),
    ]
    assert rows["amount"].to_list() == [10.5, 7.0, 1000.0]
    reasons = store.read(DEAD_LETTER_TABLE).sort("offset")["reason"].to_list()
    assert result.rejected == 2
    assert reasons == [
        "field 'event_time': not an ISO-8601 timestamp: 'yesterday'",
        "field 'amount' must be a number, got str",
    ]


def test_labels_from_a_fraud_flag_column(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "TRANSACTION_ID": [10, 11],
            "LABEL_TIME": [datetime(2025, 4, 8), datetime(2025, 4, 9)],
            "TX_FRAUD": [0, 1],
        }
    ).write_parquet(tmp_path / "labels.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    columns = {
        "transaction_id": "TRANSACTION_ID",
        "label_time": "LABEL_TIME",
        "is_fraud": "TX_FRAUD",
    }
    result = run(tmp_path / "labels.parquet", store, LABELS, columns=columns)
    assert result.accepted == 2
    rows = bronze(store, LABELS)
    assert rows["is_fraud"].to_list() == [False, True]
    assert rows["fraud_type"].to_list() == [None, None]


def test_mapping_errors_name_what_is_missing(tmp_path: Path) -> None:
    thin_frame().write_parquet(tmp_path / "h.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    with pytest.raises(MappingError, match=r"no source column for \['amount'\]"):
        run(tmp_path / "h.parquet", store, columns={k: v for k, v in THIN.items() if k != "amount"})
    with pytest.raises(MappingError, match=r"\['NOPE'\] not in the file"):
        run(tmp_path / "h.parquet", store, columns={**THIN, "amount": "NOPE"})
    with pytest.raises(MappingError, match="must be one of|unknown value 'online'"):
        run(tmp_path / "h.parquet", store, defaults={"channel": "online"})
    with pytest.raises(MappingError, match="not fields of the contract"):
        load_mapping(TRANSACTIONS, columns={"colour": "c"})
    with pytest.raises(MappingError, match="expected FIELD=VALUE"):
        parse_pairs(["currency"], "--default")
    with pytest.raises(ImportFailed, match="no parquet or csv files"):
        (tmp_path / "empty").mkdir()
        run(tmp_path / "empty", store)
    assert not store.exists(bronze_table(TRANSACTIONS))


def test_mapping_file_with_flags_overriding_it(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        "columns:\n  transaction_id: TRANSACTION_ID\n  amount: WRONG\ndefaults:\n  currency: USD\n"
    )
    spec = load_mapping(
        TRANSACTIONS, tmp_path / "m.yaml", columns={"amount": "TX_AMOUNT"}, defaults={}
    )
    assert spec.columns == {"transaction_id": "TRANSACTION_ID", "amount": "TX_AMOUNT"}
    assert spec.defaults == {"currency": "USD"}
    assert FIELD_DEFAULTS[TRANSACTIONS]["currency"] == "XXX"


def test_published_payloads_validate_like_the_import(tmp_path: Path) -> None:
    thin_frame().write_parquet(tmp_path / "h.parquet")
    spec = load_mapping(TRANSACTIONS, columns=THIN, defaults={"currency": "EUR"})
    [(payloads, keys)] = list(importer.mapped_events(tmp_path / "h.parquet", "parquet", spec))
    outcomes = []
    for payload in payloads:
        try:
            outcomes.append(validate_event(TRANSACTIONS, payload, NOW)["transaction_id"])
        except RejectedEvent as exc:
            outcomes.append(str(exc))
    assert outcomes == [
        "10",
        "11",
        "field 'amount' must be > 0, got -3.0",
        "13",
        outcomes[4],
    ]
    assert "is in the future" in outcomes[4]
    assert keys == [b"596", b"4961", b"2", b"4128", b"927"]  # user_id: the card stands in


def test_a_row_only_the_reference_validator_accepts_is_kept(tmp_path: Path) -> None:
    # "東京" has no visible ASCII character: the fast path leaves the row to validate_record,
    # which accepts it (it is not blank).
    frame = thin_frame().head(2).with_columns(pl.Series("CITY", ["東京", "Paris"]))
    frame.write_parquet(tmp_path / "h.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    result = run(tmp_path / "h.parquet", store, columns={**THIN, "merchant_category": "CITY"})
    assert (result.accepted, result.rejected) == (2, 0)
    assert bronze(store)["merchant_category"].to_list() == ["東京", "Paris"]


def test_batches_and_commits_keep_file_order_and_write_one_file_per_date_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = 20
    pl.DataFrame(
        {
            "TRANSACTION_ID": list(range(rows)),
            # dates 2025-04-01 (rows 0-9) and 2025-04-02 (rows 10-19)
            "TX_DATETIME": [datetime(2025, 4, 1 + i // 10, 1, i) for i in range(rows)],
            "CUSTOMER_ID": [i % 3 for i in range(rows)],
            "TERMINAL_ID": [7] * rows,
            "TX_AMOUNT": [-1.0 if i in (4, 15) else 1.0 + i for i in range(rows)],
        }
    ).write_parquet(tmp_path / "h.parquet", row_group_size=6)
    monkeypatch.setattr(importer, "BATCH_ROWS", 3)
    monkeypatch.setattr(importer, "COMMIT_ROWS", 8)  # commits: rows 0-7, 8-15, 16-19
    store = DeltaStore(str(tmp_path / "delta"))
    progress: list[str] = []
    spec = load_mapping(TRANSACTIONS, columns=THIN)
    result = import_files(TRANSACTIONS, tmp_path / "h.parquet", spec, store, now=NOW,
                          progress=progress.append)  # fmt: skip
    assert (result.accepted, result.rejected) == (18, 2)
    assert bronze(store)["_offset"].to_list() == [i for i in range(rows) if i not in (4, 15)]
    assert bronze(store)["transaction_id"].to_list() == [
        str(i) for i in range(rows) if i not in (4, 15)
    ]
    assert sorted(store.read(DEAD_LETTER_TABLE)["offset"].to_list()) == [4, 15]
    table = store.open(bronze_table(TRANSACTIONS))
    history = [h for h in table.history() if h["operation"] == "WRITE"]
    assert len(history) == 3
    # commit 1: one date; commit 2: both dates; commit 3: one date
    files = pl.DataFrame(table.get_add_actions(flatten=True)).to_dicts()
    assert sorted(f["partition._event_date"].isoformat() for f in files) == [
        "2025-04-01", "2025-04-01", "2025-04-02", "2025-04-02",
    ]  # fmt: skip
    assert (
        table.transaction_version(importer.import_app_id(TRANSACTIONS, result.files[0].sha256))
        == rows
    )
    assert any("20/20 rows" in line for line in progress)
    assert all(f["num_records"] > 0 and f["min.event_time"] is not None for f in files)


def test_bronze_files_are_delta_encoded_with_row_group_statistics(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    thin_frame().write_parquet(tmp_path / "h.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    run(tmp_path / "h.parquet", store)
    [first, *_] = sorted((tmp_path / "delta" / bronze_table(TRANSACTIONS)).rglob("*.parquet"))
    meta = pq.ParquetFile(first).metadata
    names = meta.schema.to_arrow_schema().names
    group = meta.row_group(0)
    column = {name: group.column(i) for i, name in enumerate(names)}
    assert "DELTA_BYTE_ARRAY" in column["transaction_id"].encodings
    assert "DELTA_BINARY_PACKED" in column["event_time"].encodings
    assert "DELTA_BINARY_PACKED" in column["_offset"].encodings
    assert column["user_id"].statistics.has_min_max
    assert not column["user_id"].has_column_index  # no page index: row-group statistics only


def test_a_file_of_rejected_rows_records_its_position(tmp_path: Path) -> None:
    thin_frame().filter(pl.col("TX_AMOUNT") < 0).write_parquet(tmp_path / "bad.parquet")
    store = DeltaStore(str(tmp_path / "delta"))
    first = run(tmp_path / "bad.parquet", store)
    assert (first.accepted, first.rejected) == (0, 1)
    again = run(tmp_path / "bad.parquet", store)
    assert (again.accepted, again.rejected, again.files[0].already_imported) == (0, 0, 1)
    assert bronze(store).height == 0
    assert store.read(DEAD_LETTER_TABLE).height == 1


def test_csv_is_read_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = ["id,ts,card,merchant,amount"] + [
        f"a{i},2025-04-01 10:00:0{i},c{i},m1,{'x' if i == 3 else i + 1}" for i in range(7)
    ]
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(importer, "BATCH_ROWS", 2)
    monkeypatch.setattr(importer, "COMMIT_ROWS", 3)
    store = DeltaStore(str(tmp_path / "delta"))
    columns = {"transaction_id": "id", "event_time": "ts", "card_id": "card",
               "merchant_id": "merchant", "amount": "amount"}  # fmt: skip
    result = run(tmp_path / "t.csv", store, columns=columns)
    assert (result.rows, result.accepted, result.rejected) == (7, 6, 1)
    assert bronze(store)["transaction_id"].to_list() == ["a0", "a1", "a2", "a4", "a5", "a6"]
    assert store.read(DEAD_LETTER_TABLE)["reason"].to_list() == [
        "field 'amount' must be a number, got str"
    ]
