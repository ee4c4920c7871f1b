"""Backtest / shadow scoring: batch-score a time range of history with any registered models.

Rows are point-in-time feature rows (what each transaction could have known when it happened),
so a model sees offline exactly what it would have seen online; scoring goes through
``predict_proba`` (the same model-input conversion as the scoring service). Rows come
from

* the training set (``training/fraud_training_set``): matured transactions with labels, or
* ``pit_rows``: any transactions (e.g. an external data set published to the ingestion topics
  and run through ingestion + transform + features), joined point-in-time to the feature
  tables with ``build_training_frame``; labels where known, null otherwise.

The time range is ``start <= event_time < end`` (start inclusive, end exclusive; naive
datetimes are UTC). Every model scores the same rows. Metrics per model (and per UTC day):
rows, positives, AUC, AP, precision/recall at the daily review budget, and the served policy's
outcome with the model's registered thresholds: the decisions of ``policy.apply_policy`` (the
model's thresholds and the business rules, on the rows' request-time features read through
``policy.rule_inputs``), rule hits, precision/recall of what it flags and declines
(``evaluation.policy_report``). Rows without a label count in ``rows`` and the decisions, not
in the label metrics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.training_frame import build_training_frame
from fraud_platform.lib.model.input import ID_COLUMN, LABEL_COLUMN, TIME_COLUMN, predict_proba
from fraud_platform.lib.serving.policy import (
    DEFAULT_RULES,
    Rule,
    Thresholds,
    Verdict,
    apply_policy_many,
    rule_inputs,
    unmeasured_rules,
)
from fraud_platform.lib.training.evaluation import policy_report
from fraud_platform.lib.training.metrics import day_index, day_iso, json_safe, sample_metrics

SCORE_COLUMNS = ("model_tag", "transaction_id", "event_time", "score", "is_fraud")


def as_utc(value: datetime | date | str) -> datetime:
    """A timezone-aware UTC datetime from a datetime, a date (midnight) or an ISO string."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def in_range(frame: pl.DataFrame, start: Any, end: Any) -> pl.DataFrame:
    """Rows with ``start <= event_time < end``, sorted by time (and id)."""
    start_utc, end_utc = as_utc(start), as_utc(end)
    if end_utc <= start_utc:
        raise ValueError(f"backtest range is empty: end {end_utc} <= start {start_utc}")
    column = frame.schema[TIME_COLUMN]
    if getattr(column, "time_zone", None) is None:
        start_utc, end_utc = start_utc.replace(tzinfo=None), end_utc.replace(tzinfo=None)
    t = pl.col(TIME_COLUMN)
    order = [c for c in (TIME_COLUMN, ID_COLUMN) if c in frame.columns]
    return frame.filter((t >= start_utc) & (t < end_utc)).sort(order)


def pit_rows(
    transactions: pl.DataFrame,
    group_rows: Mapping[str, pl.DataFrame | pl.LazyFrame],
    service: FeatureService,
    start: Any,
    end: Any,
    labels: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Point-in-time model rows for the transactions (silver ``fct_transactions``) in the
    range, whether or not they are in the training set. ``is_fraud`` / ``fraud_type`` come from
    ``labels`` (latest label per transaction) when given, else stay null."""
    selected = in_range(transactions, start, end)
    if labels is not None and labels.height:
        known = (
            labels.sort("label_time")
            .unique(subset=["transaction_id"], keep="last", maintain_order=True)
            .select("transaction_id", "is_fraud", "fraud_type")
        )
        selected = selected.join(known, on="transaction_id", how="left")
    else:
        selected = selected.with_columns(
            pl.lit(None, pl.Boolean).alias("is_fraud"), pl.lit(None, pl.String).alias("fraud_type")
        )
    if selected.is_empty():
        return selected
    return build_training_frame(selected, group_rows, service)


# ---------------------------------------------------------------------------------------------
# metrics


@dataclass(frozen=True)
class ModelBacktest:
    model: str
    rows: int
    labelled: int
    positives: int
    auc_roc: float | None
    average_precision: float | None
    review_budget_per_day: int
    reviewed_at_budget: int
    frauds_caught_at_budget: int
    precision_at_budget: float | None
    recall_at_budget: float | None
    thresholds: dict[str, float] | None
    policy: dict[str, Any] | None  # the served policy's report; None without thresholds
    per_day: list[dict[str, Any]] = field(default_factory=list)

    @property
    def decisions(self) -> dict[str, int]:
        """approve / review / decline counts of the served policy ({} without thresholds)."""
        return dict(self.policy["decisions"]) if self.policy else {}

    @property
    def flagged(self) -> int:
        """Rows the policy sends to review or declines."""
        return self.policy["flagged"] if self.policy else 0

    @property
    def declined(self) -> int:
        return self.policy["declined"] if self.policy else 0

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(self))


@dataclass(frozen=True)
class BacktestResult:
    start: datetime
    end: datetime
    rows: int
    models: dict[str, ModelBacktest]
    scores: pl.DataFrame  # SCORE_COLUMNS, one row per model and transaction
    rules_unmeasured: dict[str, list[str]] = field(default_factory=dict)  # rule -> missing cols

    def table(self) -> pl.DataFrame:
        """One row per model: the headline metrics."""
        return pl.DataFrame(
            [
                {
                    "model": m.model,
                    "rows": m.rows,
                    "positives": m.positives,
                    "auc_roc": m.auc_roc,
                    "average_precision": m.average_precision,
                    "precision_at_budget": m.precision_at_budget,
                    "recall_at_budget": m.recall_at_budget,
                    "flagged": m.flagged,
                    "approve": m.decisions.get("approve", 0),
                    "review": m.decisions.get("review", 0),
                    "decline": m.decisions.get("decline", 0),
                    "policy_precision": _policy_metric(m, "precision_flagged"),
                    "policy_recall": _policy_metric(m, "recall_flagged"),
                }
                for m in self.models.values()
            ],
            schema_overrides={
                "auc_roc": pl.Float64,
                "average_precision": pl.Float64,
                "precision_at_budget": pl.Float64,
                "recall_at_budget": pl.Float64,
                "policy_precision": pl.Float64,
                "policy_recall": pl.Float64,
            },
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": self.rows,
            "rules_unmeasured": self.rules_unmeasured,
            "models": {name: m.to_dict() for name, m in self.models.items()},
        }

    def markdown(self) -> str:
        """The per-model table as markdown (also what the CLI prints)."""
        header = (
            "| model | rows | positives | AUC | AP | precision@budget | recall@budget "
            "| flagged | approve / review / decline | policy precision / recall |"
        )
        lines = [header, "|" + "---|" * 10]
        for m in self.models.values():
            lines.append(
                f"| {m.model} | {m.rows:,} | {m.positives:,} | {fmt(m.auc_roc)} "
                f"| {fmt(m.average_precision)} | {fmt(m.precision_at_budget)} "
                f"| {fmt(m.recall_at_budget)} | {m.flagged:,} "
                f"| {m.decisions.get('approve', 0):,} / {m.decisions.get('review', 0):,} / "
                f"{m.decisions.get('decline', 0):,} "
                f"| {fmt(_policy_metric(m, 'precision_flagged'))} / "
                f"{fmt(_policy_metric(m, 'recall_flagged'))} |"
            )
        return "\n".join(lines)


def _policy_metric(m: ModelBacktest, name: str) -> float | None:
    return json_safe(m.policy.get(name)) if m.policy else None


def fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def backtest(
    models: Mapping[str, Any],
    frame: pl.DataFrame,
    start: Any,
    end: Any,
    *,
    review_budget_per_day: int = 50,
    thresholds: Mapping[str, Any] | None = None,
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> BacktestResult:
    """Score the rows of ``frame`` with ``start <= event_time < end`` with every model.

    ``models``: name (normally the tag) -> CatBoost model or ``TrainedModel``.
    ``thresholds``: name -> ``{"review", "decline"}`` (the model's registered thresholds); the
    served policy is those thresholds plus ``rules``. A model without thresholds gets no policy
    report (empty decision counts).
    """
    if not models:
        raise ValueError("backtest needs at least one model")
    rows = in_range(frame, start, end)
    thresholds = thresholds or {}
    n = rows.height
    if LABEL_COLUMN in rows.columns:
        label = rows[LABEL_COLUMN]
        known = ~label.is_null().to_numpy()
        y = label.fill_null(False).cast(pl.Boolean).to_numpy()
    else:
        known = np.zeros(n, dtype=bool)
        y = np.zeros(n, dtype=bool)
    times = rows[TIME_COLUMN].to_numpy() if n else np.array([], dtype="datetime64[us]")
    days = day_index(times, n) if n else np.array([], dtype=np.int64)
    facts = rule_inputs(rows, rules) if thresholds else []
    results: dict[str, ModelBacktest] = {}
    score_frames: list[pl.DataFrame] = []
    for name, model in models.items():
        s = predict_proba(model, rows) if n else np.array([], dtype=np.float64)
        limits = Thresholds.of(thresholds[name]) if thresholds.get(name) else None
        verdicts = apply_policy_many(s, facts, limits, rules) if limits else None
        results[name] = _model_backtest(
            name, s, y, known, days, review_budget_per_day, limits, verdicts, rules
        )
        score_frames.append(
            pl.DataFrame(
                {
                    "model_tag": [name] * n,
                    "transaction_id": rows[ID_COLUMN] if ID_COLUMN in rows.columns else [None] * n,
                    "event_time": rows[TIME_COLUMN],
                    "score": s,
                    "is_fraud": rows[LABEL_COLUMN]
                    if LABEL_COLUMN in rows.columns
                    else pl.Series([None] * n, dtype=pl.Boolean),
                },
                schema_overrides={
                    "model_tag": pl.String,
                    "transaction_id": pl.String,
                    "score": pl.Float64,
                    "is_fraud": pl.Boolean,
                },
            )
        )
    return BacktestResult(
        start=as_utc(start),
        end=as_utc(end),
        rows=n,
        models=results,
        scores=pl.concat(score_frames) if score_frames else pl.DataFrame(),
        rules_unmeasured=unmeasured_rules(rows.columns, rules) if thresholds else {},
    )


def _model_backtest(
    name: str,
    s: np.ndarray,
    y: np.ndarray,
    known: np.ndarray,
    days: np.ndarray,
    review_budget_per_day: int,
    thresholds: Thresholds | None,
    verdicts: list[Verdict] | None,
    rules: Sequence[Rule],
) -> ModelBacktest:
    overall = sample_metrics(y[known], s[known], days[known], review_budget_per_day)

    def report(sel: np.ndarray) -> dict[str, Any] | None:
        """The policy's report on the selected rows (None without thresholds)."""
        if verdicts is None:
            return None
        chosen = [v for v, keep in zip(verdicts, sel.tolist(), strict=True) if keep]
        return json_safe(policy_report(chosen, y[sel], known[sel], rules=rules))

    per_day = []
    for day in np.unique(days):
        sel = days == day
        lab = sel & known
        day_metrics = sample_metrics(y[lab], s[lab], days[lab], review_budget_per_day)
        per_day.append(
            {
                "day": day_iso(day),
                "rows": int(sel.sum()),
                **{k: json_safe(v) for k, v in day_metrics.items()},
                "policy": report(sel),
            }
        )
    return ModelBacktest(
        model=name,
        rows=int(s.size),
        labelled=overall["labelled"],
        positives=overall["positives"],
        auc_roc=json_safe(overall["auc_roc"]),
        average_precision=json_safe(overall["average_precision"]),
        review_budget_per_day=int(review_budget_per_day),
        reviewed_at_budget=overall["reviewed_at_budget"],
        frauds_caught_at_budget=overall["frauds_caught_at_budget"],
        precision_at_budget=json_safe(overall["precision_at_budget"]),
        recall_at_budget=json_safe(overall["recall_at_budget"]),
        thresholds=thresholds.to_dict() if thresholds else None,
        policy=report(np.ones(s.size, dtype=bool)),
        per_day=per_day,
    )


# ---------------------------------------------------------------------------------------------
# registered models


def load_models(store: Any, tags: list[str]) -> tuple[dict[str, Any], dict[str, dict]]:
    """(tag -> loaded CatBoost model, tag -> registered thresholds) from a model store
    (``ModelStoreResource``); ``name:latest`` style tags resolve to their version."""
    models: dict[str, Any] = {}
    limits: dict[str, dict] = {}
    for tag in tags:
        entry = store.get(tag)
        resolved = str(entry.tag)
        models[resolved] = store.load_catboost(resolved)
        if entry.info.metadata.get("thresholds"):
            limits[resolved] = dict(entry.info.metadata["thresholds"])
    return models, limits


def default_tags(store: Any, name: str) -> list[str]:
    """The champion and the newest registered model (one tag when they are the same)."""
    tags: list[str] = []
    champion = store.champion(name)
    if champion:
        tags.append(champion)
    registered = store.list(name)
    if registered and str(registered[0].tag) not in tags:
        tags.append(str(registered[0].tag))
    return tags


__all__ = [
    "SCORE_COLUMNS",
    "BacktestResult",
    "ModelBacktest",
    "as_utc",
    "backtest",
    "default_tags",
    "fmt",
    "in_range",
    "load_models",
    "pit_rows",
]
