"""Champion vs challenger: the promotion gate's decision (pure: no Dagster, no model store).

Both models are scored on the SAME rows: the challenger's test period, i.e. the most recent
matured period of the training set it was trained on (``comparison_period`` reproduces it with the
challenger's own split settings through ``training.time_split``). The rules:

* the challenger already is the champion (same tag) -> no change;
* there is no champion -> promote;
* the champion cannot be loaded, or the frame lacks some of its features -> promote, with the
  reason recorded (a champion that cannot be compared cannot defend its place);
* otherwise promote iff ``challenger[metric] >= champion[metric] + margin``.

Beside the metric, each model's served policy is measured on the same rows
(``challenger_policy`` / ``champion_policy``: ``evaluation.policy_report`` of
``policy.apply_policy`` with the model's registered thresholds and the rules), so the decision
record shows what each model would decide in service, not only how it ranks.

The metric is one of ``METRICS`` (``average_precision`` by default: the fraud class is rare,
so the precision-recall area is what the review team feels); ``margin`` is an absolute
difference of that metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import LABEL_COLUMN, TIME_COLUMN, TrainedModel, predict_proba
from fraud_platform.lib.serving.policy import (
    DEFAULT_RULES,
    REQUIRED_COLUMNS,
    Rule,
    Thresholds,
    apply_policy_many,
    rule_inputs,
)
from fraud_platform.lib.training import fit as training
from fraud_platform.lib.training.evaluation import policy_report
from fraud_platform.lib.training.metrics import as_numpy, day_index, json_safe, sample_metrics

METRICS = ("average_precision", "auc_roc", "precision_at_budget", "recall_at_budget")
PROMOTED = "promoted"
KEPT = "kept champion"
NO_CHANGE = "no change"
# float noise: challenger == champion + margin (computed differently) still counts as reaching it
_TOLERANCE = 1e-12


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    decision: str  # PROMOTED | KEPT | NO_CHANGE
    reason: str
    metric: str
    margin: float
    champion_tag: str | None = None
    challenger_tag: str | None = None
    champion: dict[str, Any] = field(default_factory=dict)
    challenger: dict[str, Any] = field(default_factory=dict)
    period_start: str | None = None
    period_end: str | None = None
    rows: int = 0
    positives: int = 0
    challenger_policy: dict[str, Any] = field(default_factory=dict)
    champion_policy: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


def metrics(
    y: Any, scores: Any, event_time: Any, *, review_budget_per_day: int = 50
) -> dict[str, float]:
    """Ranking and review-budget metrics of one model on one labelled sample."""
    y_arr = np.asarray(as_numpy(y)).astype(bool)
    s = np.asarray(as_numpy(scores), dtype=np.float64)
    days = day_index(event_time, s.size)
    found = sample_metrics(y_arr, s, days, review_budget_per_day)
    return {name: found[name] for name in METRICS}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, datetime) else str(value)


def compare(
    champion_scores: Any | None,
    challenger_scores: Any,
    y: Any,
    event_time: Any,
    metric: str = "average_precision",
    margin: float = 0.005,
    *,
    champion_tag: str | None = None,
    challenger_tag: str | None = None,
    champion_problem: str | None = None,
    review_budget_per_day: int = 50,
    challenger_policy: Mapping[str, Any] | None = None,
    champion_policy: Mapping[str, Any] | None = None,
) -> GateDecision:
    """Decide whether the challenger replaces the champion (rules in the module docstring).

    ``champion_scores`` is None when there is no champion (``champion_tag`` None) or when it
    could not be scored (``champion_problem`` says why). Scores, labels and event times are
    aligned arrays over the same rows. ``*_policy``: each model's ``policy_report`` on these
    rows, recorded with the decision.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    y_arr = np.asarray(as_numpy(y)).astype(bool)
    times = as_numpy(event_time)
    period = (_iso(_item(times.min())), _iso(_item(times.max()))) if len(times) else (None, None)
    common: dict[str, Any] = {
        "metric": metric,
        "margin": float(margin),
        "champion_tag": champion_tag,
        "challenger_tag": challenger_tag,
        "period_start": period[0],
        "period_end": period[1],
        "rows": int(y_arr.size),
        "positives": int(y_arr.sum()),
        "challenger_policy": dict(challenger_policy or {}),
        "champion_policy": dict(champion_policy or {}),
    }
    if champion_tag is not None and champion_tag == challenger_tag:
        return GateDecision(False, NO_CHANGE, "the challenger already is the champion", **common)
    challenger = metrics(
        y_arr, challenger_scores, times, review_budget_per_day=review_budget_per_day
    )
    common["challenger"] = challenger
    if champion_tag is None:
        return GateDecision(True, PROMOTED, "no champion yet", **common)
    if champion_problem is not None or champion_scores is None:
        problem = champion_problem or "no champion scores"
        return GateDecision(
            True, PROMOTED, f"champion {champion_tag} cannot be scored: {problem}", **common
        )
    champion = metrics(y_arr, champion_scores, times, review_budget_per_day=review_budget_per_day)
    common["champion"] = champion
    new, old = challenger[metric], champion[metric]
    if math.isnan(new):
        return GateDecision(
            False, KEPT, f"challenger {metric} is undefined on this period", **common
        )
    if math.isnan(old):
        return GateDecision(True, PROMOTED, f"champion {metric} is undefined", **common)
    needed = old + margin
    if new >= needed - _TOLERANCE:
        return GateDecision(
            True,
            PROMOTED,
            f"challenger {metric} {new:.4f} >= champion {old:.4f} + margin {margin:g}",
            **common,
        )
    return GateDecision(
        False,
        KEPT,
        f"challenger {metric} {new:.4f} < champion {old:.4f} + margin {margin:g}",
        **common,
    )


# ---------------------------------------------------------------------------------------------
# model selection: which candidate of one training run becomes the challenger


def _item(value: Any) -> Any:
    """numpy datetime64 -> Python datetime (microseconds); other values unchanged."""
    if isinstance(value, np.datetime64):  # numpy times are UTC (polars converts to UTC)
        return value.astype("datetime64[us]").item().replace(tzinfo=UTC)
    return value


# ---------------------------------------------------------------------------------------------
# the comparison period and scoring


def split_config(model_metadata: Mapping[str, Any]) -> training.TrainConfig:
    """The split settings a registered model was trained with (defaults where not recorded)."""
    params = model_metadata.get("params") or {}
    defaults = training.TrainConfig()
    return training.TrainConfig(
        test_days=float(params.get("test_days", defaults.test_days)),
        validation_days=float(params.get("validation_days", defaults.validation_days)),
        gap_days=float(params.get("gap_days", defaults.gap_days)),
    )


def comparison_period(frame: pl.DataFrame, model_metadata: Mapping[str, Any]) -> pl.DataFrame:
    """The challenger's test period of ``frame``: the most recent matured rows, as
    ``training.time_split`` with the challenger's split settings cuts them. Falls back to the
    recorded ``split`` boundaries when the frame cannot be split that way."""
    try:
        return training.time_split(frame, split_config(model_metadata)).test
    except ValueError:
        split = model_metadata.get("split") or {}
        if "test_start" not in split:
            raise
        start = datetime.fromisoformat(split["test_start"])
        column = frame[TIME_COLUMN]
        tz = getattr(column.dtype, "time_zone", None)
        if tz and start.tzinfo is None:
            from zoneinfo import ZoneInfo

            start = start.replace(tzinfo=ZoneInfo(tz))
        return frame.filter(pl.col(TIME_COLUMN) >= start).sort(TIME_COLUMN)


def model_features(model: Any) -> list[str]:
    if isinstance(model, TrainedModel):
        return list(model.features)
    return list(model.feature_names_)


def score(model: Any, frame: pl.DataFrame) -> tuple[np.ndarray | None, str | None]:
    """(scores, None), or (None, why the model cannot score this frame)."""
    missing = [name for name in model_features(model) if name not in frame.columns]
    if missing:
        return None, f"features not in the comparison frame: {missing}"
    try:
        return predict_proba(model, frame), None
    except Exception as exc:  # noqa: BLE001 - any scoring error disqualifies the champion
        return None, f"{type(exc).__name__}: {exc}"


def with_policy_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the columns the policy requires that it lacks added as nulls (a feature
    service without ``channel``, e.g. thin data: channel rules then never fire)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias(c) for c in missing)


def policy_on(
    period: pl.DataFrame,
    scores: np.ndarray | None,
    thresholds: Thresholds | Mapping[str, Any] | None,
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> dict[str, Any]:
    """The served policy's ``policy_report`` for one model on the period ({} without scores or
    thresholds)."""
    if scores is None or not thresholds:
        return {}
    period = with_policy_columns(period)
    verdicts = apply_policy_many(scores, rule_inputs(period, rules), thresholds, rules)
    y = period[LABEL_COLUMN].to_numpy().astype(bool)
    return policy_report(verdicts, y, rules=rules)


def run_gate(
    period: pl.DataFrame,
    challenger: Any,
    champion: Any | None,
    *,
    challenger_tag: str,
    champion_tag: str | None,
    champion_problem: str | None = None,
    metric: str = "average_precision",
    margin: float = 0.005,
    review_budget_per_day: int = 50,
    challenger_thresholds: Thresholds | Mapping[str, Any] | None = None,
    champion_thresholds: Thresholds | Mapping[str, Any] | None = None,
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> GateDecision:
    """Score both models on ``period`` and ``compare`` them. ``champion`` is the loaded
    champion model (None when there is none or it could not be loaded: ``champion_problem``).
    ``*_thresholds``: each model's registered thresholds, to measure its served policy."""
    y = period[LABEL_COLUMN].to_numpy()
    times = period[TIME_COLUMN].to_numpy()
    kwargs: dict[str, Any] = {
        "metric": metric,
        "margin": margin,
        "champion_tag": champion_tag,
        "challenger_tag": challenger_tag,
        "review_budget_per_day": review_budget_per_day,
    }
    if champion_tag is not None and champion_tag == challenger_tag:
        return compare(None, None, y, times, **kwargs)
    challenger_scores, problem = score(challenger, period)
    if challenger_scores is None:
        raise ValueError(
            f"the challenger {challenger_tag} cannot score its own test period: {problem}"
        )
    champion_scores = None
    if champion_tag is not None and champion_problem is None:
        if champion is None:
            champion_problem = "the champion model could not be loaded"
        else:
            champion_scores, champion_problem = score(champion, period)
    return compare(
        champion_scores,
        challenger_scores,
        y,
        times,
        champion_problem=champion_problem,
        challenger_policy=policy_on(period, challenger_scores, challenger_thresholds, rules),
        champion_policy=policy_on(period, champion_scores, champion_thresholds, rules),
        **kwargs,
    )


__all__ = [
    "KEPT",
    "METRICS",
    "NO_CHANGE",
    "PROMOTED",
    "GateDecision",
    "compare",
    "metrics",
    "policy_on",
    "run_gate",
    "score",
    "split_config",
    "comparison_period",
]
