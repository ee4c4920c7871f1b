"""The reference of prediction drift: a registered model's scores and the policy's decisions on
its own validation period (the rows its thresholds were chosen on), recomputed from the
training-set version it was trained on (``training_set_table`` / ``training_set_delta_version``
and ``split`` in its registry metadata)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.serving.policy import Thresholds, apply_policy_many, rule_inputs
from fraud_platform.lib.training.backtest import in_range


def validation_period(metadata: Mapping[str, Any]) -> tuple[str, str]:
    """(start, end) ISO times of the model's validation part (end exclusive)."""
    split = metadata.get("split") or {}
    if not split.get("validation_start") or not split.get("validation_end"):
        raise ValueError("the model's registry metadata has no split.validation_start/end")
    return str(split["validation_start"]), str(split["validation_end"])


def validation_reference(
    model: Any, metadata: Mapping[str, Any], training_frame: pl.DataFrame
) -> pl.DataFrame:
    """``score`` and ``decision`` of every validation row (the served policy: the model's
    registered thresholds and the rules)."""
    start, end = validation_period(metadata)
    rows = in_range(training_frame, start, end)
    if rows.is_empty():
        raise ValueError(f"the training set has no rows in the validation period {start}..{end}")
    scores = predict_proba(model, rows)
    verdicts = apply_policy_many(scores, rule_inputs(rows), Thresholds.of(metadata["thresholds"]))
    return pl.DataFrame(
        {"score": scores, "decision": [v.decision for v in verdicts]},
        schema={"score": pl.Float64, "decision": pl.String},
    )
