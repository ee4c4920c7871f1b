"""The labels of an evaluation window, and the cards already known to be compromised before it.

**Labels of the window's transactions**, first source that has one:

1. a label file (``read_label_file``: CSV or Parquet with ``transaction_id`` and ``is_fraud``,
   optionally ``fraud_type`` and ``label_time``), for a window whose labels have not reached the
   platform yet (an external period);
2. the platform's labels (silver ``fct_labels``; the latest per transaction);
3. legitimate, when the transaction has matured: ``maturity`` has passed between it and the
   newest transaction (the data's clock) without a fraud label, as in the training set.

Younger transactions without a label are unknown: left out of the metrics and counted.

**Known compromised** (``known_compromised_cards``): a card with a fraud label whose
``label_time`` is before the window's start. The review team already knows those cards, so a
protocol that flags them again measures nothing new (the Handbook removes them from the test set).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

LABEL_FILE_COLUMNS = ("transaction_id", "is_fraud")
_TRUE = ("1", "true", "t", "yes", "y")
_FALSE = ("0", "false", "f", "no", "n")


class LabelFileError(ValueError):
    """A label file that cannot be used; the message names the file and the problem."""


def read_label_file(path: str | Path) -> pl.DataFrame:
    """(transaction_id, is_fraud, fraud_type, label_time) from a CSV or Parquet file.

    ``is_fraud`` may be a boolean, 0/1 or true/false text. A transaction listed twice with the
    same label counts once; with different labels it is an error, as is a missing or unreadable
    ``is_fraud``.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelFileError(f"label file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        raw = pl.read_parquet(path)
    elif suffix in (".csv", ".txt"):
        raw = pl.read_csv(path, infer_schema=False)  # every column as text: parsed below
    else:
        raise LabelFileError(f"label file {path}: expected .csv or .parquet, got {suffix!r}")
    missing = [c for c in LABEL_FILE_COLUMNS if c not in raw.columns]
    if missing:
        raise LabelFileError(f"label file {path} lacks columns {missing} (has {raw.columns})")
    frame = raw.select(
        pl.col("transaction_id").cast(pl.String),
        _is_fraud(raw["is_fraud"]).alias("is_fraud"),
        (
            pl.col("fraud_type").cast(pl.String)
            if "fraud_type" in raw.columns
            else pl.lit(None, pl.String)
        ).alias("fraud_type"),
        _label_time(raw).alias("label_time"),
    )
    for column in ("transaction_id", "is_fraud"):
        bad = frame.filter(pl.col(column).is_null())
        if bad.height:
            shown = raw.filter(frame[column].is_null()).head(1).to_dicts()
            raise LabelFileError(
                f"label file {path}: {bad.height} rows without a usable {column} "
                f"(e.g. {shown[0]}); is_fraud must be true/false or 1/0"
            )
    frame = frame.unique(subset=["transaction_id", "is_fraud"], keep="first", maintain_order=True)
    conflicting = frame.filter(pl.col("transaction_id").is_duplicated())
    if conflicting.height:
        example = conflicting["transaction_id"][0]
        raise LabelFileError(
            f"label file {path}: {conflicting['transaction_id'].n_unique()} transactions have "
            f"both labels (e.g. {example!r})"
        )
    return frame


def _is_fraud(column: pl.Series) -> pl.Expr:
    if column.dtype == pl.Boolean:
        return pl.col("is_fraud")
    if column.dtype.is_numeric():
        return pl.when(pl.col("is_fraud").is_in([0, 1])).then(pl.col("is_fraud") == 1)
    text = pl.col("is_fraud").cast(pl.String).str.strip_chars().str.to_lowercase()
    return pl.when(text.is_in(_TRUE)).then(True).when(text.is_in(_FALSE)).then(False)


def _label_time(raw: pl.DataFrame) -> pl.Expr:
    if "label_time" not in raw.columns:
        return pl.lit(None, pl.Datetime("us", "UTC"))
    column = raw["label_time"]
    if isinstance(column.dtype, pl.Datetime):
        if column.dtype.time_zone is None:
            return pl.col("label_time").dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        return pl.col("label_time").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    return pl.col("label_time").cast(pl.String).str.to_datetime(time_unit="us", time_zone="UTC")


def latest_labels(labels: pl.DataFrame) -> pl.DataFrame:
    """The latest label of each transaction: (transaction_id, is_fraud, fraud_type)."""
    return (
        labels.sort("label_time")
        .unique(subset=["transaction_id"], keep="last", maintain_order=True)
        .select("transaction_id", "is_fraud", "fraud_type")
    )


def known_compromised_cards(
    transactions: pl.DataFrame, labels: pl.DataFrame, before: datetime
) -> set[str]:
    """Cards with a fraud label known (``label_time``) strictly before ``before``."""
    frauds = labels.filter(pl.col("is_fraud") & (pl.col("label_time") < before))
    cards = transactions.join(frauds.select("transaction_id").unique(), on="transaction_id")
    return set(cards["card_id"].drop_nulls().to_list())


@dataclass(frozen=True)
class WindowLabels:
    """The window's transactions with ``is_fraud`` / ``fraud_type`` (labelled rows only) and
    where each label came from."""

    frame: pl.DataFrame
    from_file: int
    from_platform: int
    matured_unlabelled_legit: int
    unknown_excluded: int
    file_labels_unmatched: int  # file rows naming no transaction of the window

    def summary(self) -> dict[str, Any]:
        return {
            "labelled": self.frame.height,
            "from_file": self.from_file,
            "from_platform": self.from_platform,
            "matured_unlabelled_legit": self.matured_unlabelled_legit,
            "unknown_excluded": self.unknown_excluded,
            "file_labels_unmatched": self.file_labels_unmatched,
        }


def label_window(
    window: pl.DataFrame,
    platform_labels: pl.DataFrame,
    *,
    data_now: datetime,
    maturity: timedelta,
    file_labels: pl.DataFrame | None = None,
    window_ids: pl.Series | None = None,
) -> WindowLabels:
    """Label the window's transactions (file, then platform, then matured = legit).

    ``window_ids``: every transaction id of the window when ``window`` is a part of it (known
    compromised cards left out), so file rows naming the left-out ones are not "unmatched"."""
    from_platform = latest_labels(platform_labels).rename(
        {"is_fraud": "_platform_fraud", "fraud_type": "_platform_type"}
    )
    frame = window.drop("is_fraud", "fraud_type", strict=False).join(
        from_platform, on="transaction_id", how="left"
    )
    unmatched = 0
    if file_labels is not None:
        file_latest = file_labels.select(
            "transaction_id",
            pl.col("is_fraud").alias("_file_fraud"),
            pl.col("fraud_type").alias("_file_type"),
        )
        frame = frame.join(file_latest, on="transaction_id", how="left")
        ids = window["transaction_id"] if window_ids is None else window_ids
        unmatched = int((~file_labels["transaction_id"].is_in(ids.implode())).sum())
    else:
        frame = frame.with_columns(
            pl.lit(None, pl.Boolean).alias("_file_fraud"),
            pl.lit(None, pl.String).alias("_file_type"),
        )
    matured = pl.col("event_time") <= data_now - maturity
    source = (
        pl.when(pl.col("_file_fraud").is_not_null())
        .then(pl.lit("file"))
        .when(pl.col("_platform_fraud").is_not_null())
        .then(pl.lit("platform"))
        .when(matured)
        .then(pl.lit("matured"))
        .otherwise(pl.lit(None, pl.String))
    )
    frame = frame.with_columns(source.alias("_label_source"))
    frame = frame.with_columns(
        pl.coalesce("_file_fraud", "_platform_fraud", pl.when(matured).then(False)).alias(
            "is_fraud"
        ),
        pl.when(pl.col("_file_fraud").is_not_null())
        .then(pl.col("_file_type"))
        .otherwise(pl.col("_platform_type"))
        .alias("fraud_type"),
    )
    counts = frame["_label_source"].value_counts()
    count = dict(zip(counts["_label_source"].to_list(), counts["count"].to_list(), strict=True))
    labelled = frame.filter(pl.col("_label_source").is_not_null()).drop(
        "_file_fraud", "_file_type", "_platform_fraud", "_platform_type", "_label_source"
    )
    return WindowLabels(
        frame=labelled,
        from_file=int(count.get("file", 0)),
        from_platform=int(count.get("platform", 0)),
        matured_unlabelled_legit=int(count.get("matured", 0)),
        unknown_excluded=int(count.get(None, 0)),
        file_labels_unmatched=unmatched,
    )


def apply_file_labels(rows: pl.DataFrame, file_labels: pl.DataFrame) -> pl.DataFrame:
    """``rows`` (point-in-time rows with ``is_fraud``) with the file's label where it has one."""
    override = file_labels.select(
        "transaction_id",
        pl.col("is_fraud").alias("_file_fraud"),
        pl.col("fraud_type").alias("_file_type"),
    )
    joined = rows.join(override, on="transaction_id", how="left")
    has_file = pl.col("_file_fraud").is_not_null()
    updates = [pl.coalesce("_file_fraud", "is_fraud").alias("is_fraud")]
    if "fraud_type" in rows.columns:
        updates.append(
            pl.when(has_file)
            .then(pl.col("_file_type"))
            .otherwise(pl.col("fraud_type"))
            .alias("fraud_type")
        )
    return joined.with_columns(updates).drop("_file_fraud", "_file_type").select(rows.columns)


__all__ = [
    "LabelFileError",
    "WindowLabels",
    "apply_file_labels",
    "known_compromised_cards",
    "label_window",
    "latest_labels",
    "read_label_file",
]
