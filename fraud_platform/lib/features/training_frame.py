"""Point-in-time-correct training frames: labelled transactions joined to their features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import Dtype, FeatureService
from fraud_platform.lib.features.request import REQUEST_FEATURES, model_row

POLARS_DTYPES: dict[Dtype, pl.DataType] = {
    "float": pl.Float64(),
    "int": pl.Int64(),
    "str": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
}
LABEL_COLUMNS = ("transaction_id", "event_time", "user_id", "is_fraud", "fraud_type")


def resolve_as_of(transactions: pl.DataFrame, as_of: datetime | None) -> datetime:
    """The training set's clock: ``as_of`` when given (a cutoff: what was known then), else the
    newest transaction. A cutoff before the first transaction is an error naming the range."""
    if transactions.is_empty():
        raise ValueError("no transactions: the training set needs at least one")
    first: datetime = transactions["event_time"].min()  # type: ignore[assignment]
    last: datetime = transactions["event_time"].max()  # type: ignore[assignment]
    if as_of is None:
        return last
    if as_of.tzinfo is None:
        raise ValueError(f"as_of {as_of.isoformat()} has no time zone (give it in UTC)")
    if first.tzinfo is None:
        first, last = first.replace(tzinfo=as_of.tzinfo), last.replace(tzinfo=as_of.tzinfo)
    if as_of < first:
        raise ValueError(
            f"as_of {as_of.isoformat()} is before the first transaction "
            f"({first.isoformat()} .. {last.isoformat()}): nothing was known then"
        )
    return as_of


@dataclass(frozen=True)
class LabelledTransactions:
    frame: pl.DataFrame
    matured: int
    unmatured_excluded: int
    positives: int
    as_of: datetime


def label_transactions(
    transactions: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    as_of: datetime,
    maturity: timedelta,
) -> LabelledTransactions:
    """Transactions whose label is settled at ``as_of``.

    Only labels with ``label_time <= as_of`` are known. A transaction is matured once
    ``maturity`` has passed since it happened: by then a fraud would have been reported, so an
    unlabelled matured transaction counts as legitimate. Younger transactions are excluded
    (their missing label means "not yet", not "legit") and counted.
    """
    known = (
        labels.filter(pl.col("label_time") <= as_of)
        .sort("label_time")
        .unique(subset=["transaction_id"], keep="last", maintain_order=True)
        .select("transaction_id", "is_fraud", "fraud_type")
    )
    in_past = transactions.filter(pl.col("event_time") <= as_of)
    matured = in_past.filter(pl.col("event_time") <= as_of - maturity)
    frame = (
        matured.join(known, on="transaction_id", how="left")
        .with_columns(pl.col("is_fraud").fill_null(False))
        .sort("event_time", "transaction_id")
    )
    return LabelledTransactions(
        frame=frame,
        matured=frame.height,
        unmatured_excluded=in_past.height - matured.height,
        positives=int(frame["is_fraud"].sum()),
        as_of=as_of,
    )


def model_feature_schema(service: FeatureService) -> dict[str, pl.DataType]:
    dtypes: dict[str, Dtype] = {f.name: f.dtype for f in REQUEST_FEATURES}
    for group in service.groups:
        dtypes.update({f.name: f.dtype for f in group.features})
    return {name: POLARS_DTYPES[dtypes[name]] for name in service.model_features}


def model_frame(rows_with_features: pl.DataFrame, service: FeatureService) -> pl.DataFrame:
    """Apply the request-time feature code to each point-in-time row (same code as serving)."""
    records = [model_row(row, row, service) for row in rows_with_features.iter_rows(named=True)]
    return pl.DataFrame(records, schema=model_feature_schema(service), orient="row")


def build_training_frame(
    labelled: pl.DataFrame,
    group_rows: Mapping[str, pl.DataFrame | pl.LazyFrame],
    service: FeatureService,
) -> pl.DataFrame:
    """Label columns plus the model features each transaction could have known."""
    joined = point_in_time_join(labelled, service.groups, group_rows)
    features = model_frame(joined, service)
    labels = labelled.select([c for c in LABEL_COLUMNS if c in labelled.columns])
    return pl.concat([labels, features], how="horizontal")
