"""Shadow scoring: the challenger scores the traffic the champion served, never answering it.

The challenger is the newest registered model that is not the champion. It scores each logged
decision from the features the service logged with it (``f_<name>`` columns of
``decisions.flatten_decisions``: the served model's inputs), and the served policy decides with
the challenger's registered thresholds and the same rules (a degraded answer stays degraded).
A feature the challenger needs that the log does not carry (a newer feature service) is null,
as the service treats a missing feature, and is listed in ``features_missing_from_log``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.monitoring.decisions import FEATURE_PREFIX
from fraud_platform.lib.serving.policy import RuleInput, Thresholds, apply_policy_many
from fraud_platform.lib.serving.scoring import TRANSACTION_FIELDS

SHADOW_SCHEMA = {
    "decision_date": pl.Date,
    "request_id": pl.String,
    "transaction_id": pl.String,
    "scored_at": pl.Datetime("us", "UTC"),
    "channel": pl.String,
    "amount": pl.Float64,
    "model_tag": pl.String,
    "score": pl.Float64,
    "decision": pl.String,
    "served_model_version": pl.String,
    "served_score": pl.Float64,
    "served_decision": pl.String,
}


def challenger_tag(registered_newest_first: Sequence[str], champion: str | None) -> str | None:
    """The newest registered tag that is not the champion (None when there is none)."""
    return next((tag for tag in registered_newest_first if tag != champion), None)


@dataclass(frozen=True)
class ShadowResult:
    scores: pl.DataFrame  # SHADOW_SCHEMA
    features_missing_from_log: list[str]


def logged_rows(decisions: pl.DataFrame) -> list[dict[str, Any]]:
    """Per decision: the transaction's fields, then every logged feature (prefix stripped; a
    feature that is also a request field, such as ``amount``, takes the served value)."""
    logged = [c for c in decisions.columns if c.startswith(FEATURE_PREFIX)]
    fields = [c for c in TRANSACTION_FIELDS if c in decisions.columns]
    txns = decisions.select(fields).to_dicts()
    served = decisions.select(
        [pl.col(c).alias(c.removeprefix(FEATURE_PREFIX)) for c in logged]
    ).to_dicts()
    return [{**txn, **features} for txn, features in zip(txns, served, strict=True)]


def shadow_score(
    model: Any, tag: str, metadata: Mapping[str, Any], decisions: pl.DataFrame
) -> ShadowResult:
    """The challenger ``model`` (registry ``metadata``: features, thresholds) on the logged
    ``decisions`` of one day (``flatten_decisions`` output)."""
    features = list(metadata["features"])
    if decisions.is_empty():
        return ShadowResult(pl.DataFrame(schema=SHADOW_SCHEMA), [])
    rows = logged_rows(decisions)
    missing = [f for f in features if f not in rows[0]]
    scores = predict_proba(model, rows, allow_missing=True)
    facts = [
        RuleInput(txn=row, row=row, degraded=bool(degraded))
        for row, degraded in zip(rows, decisions["degraded"].to_list(), strict=True)
    ]
    verdicts = apply_policy_many(scores, facts, Thresholds.of(metadata["thresholds"]))
    frame = decisions.select(
        pl.col("scored_at").dt.convert_time_zone("UTC").dt.date().alias("decision_date"),
        "request_id",
        "transaction_id",
        pl.col("scored_at").dt.convert_time_zone("UTC"),
        "channel",
        "amount",
        pl.lit(tag).alias("model_tag"),
        pl.Series("score", scores, dtype=pl.Float64),
        pl.Series("decision", [v.decision for v in verdicts], dtype=pl.String),
        pl.col("model_version").alias("served_model_version"),
        pl.col("score").alias("served_score"),
        pl.col("decision").alias("served_decision"),
    )
    return ShadowResult(frame.cast(SHADOW_SCHEMA), missing)  # type: ignore[arg-type]
