"""The Delta tables of daily monitoring: one date partition (``decision_date``) per decision
day, replaced whole when the day is computed again (labels matured since, a new challenger),
so a re-run never duplicates a day. Reads of one day open only that partition."""

from __future__ import annotations

from datetime import date

import polars as pl

from fraud_platform.lib.contracts.events import EVENT_DATE_COLUMN, LABELS
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.names import BRONZE_TABLES

DATE_COLUMN = "decision_date"


def write_day(store: DeltaStore, table: str, day: date, frame: pl.DataFrame) -> int:
    """Replace the partition ``day`` of ``table`` with ``frame``; returns the Delta version."""
    return store.replace_range(table, frame, partition_column=DATE_COLUMN, first=day, last=day)


def read_days(store: DeltaStore, table: str) -> pl.DataFrame:
    """Every day's rows, oldest day first (empty frame while the table does not exist)."""
    if not store.exists(table):
        return pl.DataFrame()
    return store.read(table).sort(DATE_COLUMN, maintain_order=True)


def read_day(store: DeltaStore, table: str, day: date) -> pl.DataFrame:
    """The rows of the partition ``day`` only (empty frame while the table does not exist)."""
    if not store.exists(table):
        return pl.DataFrame()
    dataset = store.open(table).to_pyarrow_dataset(
        file_pruning_predicate=[(DATE_COLUMN, "=", day.isoformat())]
    )
    frame = pl.from_arrow(dataset.to_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(pl.col(DATE_COLUMN) == day)


def read_labels_since(store: DeltaStore, first: date) -> pl.DataFrame:
    """Labels of ``bronze/labels`` whose label date is ``first`` or later (a label comes after
    its transaction: a day's decisions need only these partitions)."""
    table = BRONZE_TABLES[LABELS]
    columns = ["transaction_id", "label_time", "is_fraud"]
    if not store.exists(table):
        return pl.DataFrame(
            schema={
                "transaction_id": pl.String,
                "label_time": pl.Datetime("us", "UTC"),
                "is_fraud": pl.Boolean,
            }
        )
    dataset = store.open(table).to_pyarrow_dataset(
        file_pruning_predicate=[(EVENT_DATE_COLUMN, ">=", first.isoformat())]
    )
    frame = pl.from_arrow(dataset.to_table(columns=columns))
    assert isinstance(frame, pl.DataFrame)
    return frame
