"""The evaluation protocol: train on what was known at a cutoff, test on a later window.

``run_protocol`` (what ``fraud-platform evaluate`` runs):

1. **Train until T.** The point-in-time training set with ``as_of = T``
   (``pipeline.build_training_set``): transactions matured by T (``maturity`` before it) and the
   labels known by T. The model is trained, selected and thresholded by the training pipeline's
   entry point (``pipeline.train_and_evaluate``: its time split, search and model choice).
   With ``refit``, the selected model is then refitted on every matured row up to T
   (``refit.refit_on_all``).
2. **The window [A, B)**, with ``T <= A``: its transactions, minus (optionally) those of cards
   known compromised before A; labels from a file, the platform, or maturity
   (``window.label_window``); joined point-in-time to the features as in service.
3. **Scored with the served policy**: the model's scores, its thresholds and the business rules
   of ``lib/serving/policy.py`` (through ``evaluation.evaluate``): AUC, AP, precision and recall at
   the daily review budget, the policy's decisions; and card precision@k per day
   (``card_precision``).

The report is plain JSON (``ProtocolResult.report``); the plots are PNG bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fraud_platform.lib import plots
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.training_frame import build_training_frame
from fraud_platform.lib.model.input import TrainedModel, predict_proba
from fraud_platform.lib.serving.policy import Thresholds, apply_policy_many, rule_inputs
from fraud_platform.lib.training import evaluation, pipeline
from fraud_platform.lib.training.backtest import as_utc, in_range
from fraud_platform.lib.training.card_precision import DEFAULT_K, card_precision_at_k
from fraud_platform.lib.training.fit import Log
from fraud_platform.lib.training.metrics import json_safe, metrics_by_day
from fraud_platform.lib.training.refit import matched_thresholds, refit_on_all
from fraud_platform.lib.training.window import known_compromised_cards, label_window

REPORT_FILE = "report.json"
SCORES_FILE = "scores.parquet"


@dataclass(frozen=True)
class ProtocolConfig:
    train_until: datetime
    test_start: datetime
    test_end: datetime
    maturity: timedelta = timedelta(days=7)
    exclude_known_compromised: bool = False
    card_k: int = DEFAULT_K
    refit: bool = False
    pipeline: pipeline.PipelineConfig = field(default_factory=pipeline.PipelineConfig)

    def __post_init__(self) -> None:
        for name in ("train_until", "test_start", "test_end"):
            object.__setattr__(self, name, as_utc(getattr(self, name)))
        if self.test_start < self.train_until:
            raise ValueError(
                f"the test window starts ({self.test_start.isoformat()}) before the training "
                f"cutoff ({self.train_until.isoformat()}): the model would have seen it"
            )
        if self.test_end <= self.test_start:
            raise ValueError(
                f"the test window is empty: end {self.test_end.isoformat()} <= start "
                f"{self.test_start.isoformat()}"
            )
        if self.card_k < 1:
            raise ValueError(f"k must be >= 1, got {self.card_k}")


@dataclass(frozen=True)
class ProtocolResult:
    report: dict[str, Any]  # JSON-safe
    plots: dict[str, bytes]  # file stem -> PNG
    training_frame: pl.DataFrame
    scored: (
        pl.DataFrame
    )  # the window: transaction_id, card_id, event_time, is_fraud, score, decision
    model: TrainedModel


def run_protocol(
    transactions: pl.DataFrame,
    labels: pl.DataFrame,
    group_rows: Mapping[str, pl.DataFrame | pl.LazyFrame],
    service: FeatureService,
    config: ProtocolConfig,
    *,
    file_labels: pl.DataFrame | None = None,
    log: Log | None = None,
) -> ProtocolResult:
    """Train until ``config.train_until``, evaluate on ``[test_start, test_end)``.

    ``transactions`` / ``labels``: silver ``fct_transactions`` / ``fct_labels``; ``group_rows``:
    the service's offline feature rows; ``file_labels``: ``window.read_label_file`` output.
    """
    say = log or (lambda _: None)
    built = pipeline.build_training_set(
        transactions, labels, dict(group_rows), service, config.maturity, as_of=config.train_until
    )
    frame = built.frame
    if frame.is_empty():
        raise ValueError(
            f"no matured transaction before the cutoff {config.train_until.isoformat()} "
            f"(maturity {config.maturity})"
        )
    newest_trained = as_utc(frame["event_time"].max())  # type: ignore[arg-type]
    if newest_trained >= config.train_until:  # by construction; a leak would void the report
        raise AssertionError(f"training row at {newest_trained} is not before the cutoff")
    say(f"training set as of {built.as_of}: {frame.height} rows, {built.positives} fraud")
    trained = pipeline.train_and_evaluate(
        frame,
        service.numeric_features,
        list(service.categorical_features),
        config.pipeline,
        log=log,
    )
    model, thresholds = trained.trained, trained.thresholds
    if config.refit:
        model = refit_on_all(trained.trained, frame, log=log)
        thresholds = matched_thresholds(
            trained.trained, model, trained.split.validation, trained.thresholds
        )

    window, exclusion = window_transactions(transactions, labels, file_labels, config)
    labelled = label_window(
        window,
        labels,
        data_now=as_utc(transactions["event_time"].max()),  # type: ignore[arg-type]
        maturity=config.maturity,
        file_labels=file_labels,
        window_ids=in_range(transactions, config.test_start, config.test_end)["transaction_id"],
    )
    if labelled.frame.is_empty():
        raise ValueError(
            f"the window [{config.test_start.isoformat()}, {config.test_end.isoformat()}) has no "
            f"labelled transaction ({labelled.summary()}); give its labels with a label file"
        )
    say(f"window: {window.height} transactions, labels {labelled.summary()}")
    rows = build_training_frame(labelled.frame, group_rows, service)
    cards = labelled.frame.select("transaction_id", "card_id")
    scores = predict_proba(model, rows)
    y = rows["is_fraud"].to_numpy()
    budget = config.pipeline.review_budget_per_day
    metrics = evaluation.evaluate(
        y,
        scores,
        event_time=rows["event_time"].to_numpy(),
        fraud_type=rows["fraud_type"].to_list(),
        channel=rows["channel"].to_list(),
        review_budget_per_day=budget,
        thresholds=thresholds,
        decline_precision=config.pipeline.decline_precision,
        policy_rows=rows,
    ).to_dict()
    scored = (
        rows.select("transaction_id", "event_time", "is_fraud")
        .with_columns(pl.Series("score", scores))
        .join(cards, on="transaction_id", how="left")
    )
    card_precision = card_precision_at_k(
        scored["card_id"], scored["event_time"].to_numpy(), y, scores, k=config.card_k
    )
    daily = metrics_by_day(y, scores, rows["event_time"].to_numpy(), budget)
    report = json_safe(
        {
            "protocol": {
                "train_until": config.train_until.isoformat(),
                "test_start": config.test_start.isoformat(),
                "test_end": config.test_end.isoformat(),
                "maturity_days": config.maturity / timedelta(days=1),
                "exclude_known_compromised": config.exclude_known_compromised,
                "labels_file": file_labels is not None,
                "refit": config.refit,
                "card_k": config.card_k,
                "review_budget_per_day": budget,
            },
            "training_set": {
                "as_of": built.as_of.isoformat(),
                "rows": frame.height,
                "positives": built.positives,
                "unmatured_excluded": built.unmatured_excluded,
                "first_event_time": as_utc(frame["event_time"].min()).isoformat(),  # type: ignore[arg-type]
                "last_event_time": newest_trained.isoformat(),
            },
            "model": {
                "features": len(model.features),
                "best_iteration": trained.trained.best_iteration,
                "refit": config.refit,
                "trees": _trees(model),
                "split": trained.split.summary(),
                "search": trained.search,
                "selection_test_metrics": _headline(trained.metrics),
                "thresholds": thresholds.to_dict(),
                "thresholds_source": (
                    "the selected model's shares of the validation traffic, matched on the refit"
                    if config.refit
                    else "chosen on the validation part of the time split"
                ),
            },
            "window": {
                "transactions": window.height + exclusion["transactions"],
                "known_compromised": exclusion,
                "labels": labelled.summary(),
                "scored": rows.height,
                "positives": int(y.sum()),
            },
            "metrics": {
                **_headline(metrics),
                "recall_at_fpr": metrics["recall_at_fpr"],
                "fpr_target": metrics["fpr_target"],
                "per_fraud_type": metrics["per_fraud_type"],
                "policy": metrics["policy"],
            },
            "card_precision": card_precision.to_dict(),
            "daily": daily,
        }
    )
    images = _plots(y, scores, daily, card_precision.to_dict(), budget)
    report["plots"] = {name: f"{name}.png" for name in images}
    return ProtocolResult(
        report=report,
        plots=images,
        training_frame=frame,
        scored=scored.with_columns(pl.Series("decision", _decisions(rows, scores, thresholds))),
        model=model,
    )


HEADLINE = (
    "n",
    "positives",
    "auc_roc",
    "average_precision",
    "reviewed_at_budget",
    "frauds_caught_at_budget",
    "precision_at_budget",
    "recall_at_budget",
)


def _headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {key: metrics[key] for key in HEADLINE}


def _trees(model: TrainedModel) -> int | None:
    count = getattr(model.model, "tree_count_", None)
    return int(count) if count is not None else None


def window_transactions(
    transactions: pl.DataFrame,
    labels: pl.DataFrame,
    file_labels: pl.DataFrame | None,
    config: ProtocolConfig,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The window's transactions, minus those of known-compromised cards when asked."""
    window = in_range(transactions, config.test_start, config.test_end)
    if not config.exclude_known_compromised:
        return window, {"cards": 0, "transactions": 0}
    known_labels = labels.select("transaction_id", "is_fraud", "label_time")
    if file_labels is not None:  # a file's label counts only with its label_time
        dated = file_labels.filter(pl.col("label_time").is_not_null())
        known_labels = pl.concat([known_labels, dated.select(known_labels.columns)])
    cards = known_compromised_cards(transactions, known_labels, config.test_start)
    kept = window.filter(~pl.col("card_id").is_in(list(cards)))
    return kept, {"cards": len(cards), "transactions": window.height - kept.height}


def _decisions(rows: pl.DataFrame, scores: np.ndarray, thresholds: Thresholds) -> list[str]:
    """The served policy's decision per window row (the report has their counts)."""
    return [v.decision for v in apply_policy_many(scores, rule_inputs(rows), thresholds)]


def _plots(
    y: np.ndarray,
    scores: np.ndarray,
    daily: list[dict[str, Any]],
    card_precision: Mapping[str, Any],
    budget: int,
) -> dict[str, bytes]:
    images = {
        "pr_curve": plots.pr_curve_png(y, scores, "Precision-recall (test window)"),
        "roc_curve": plots.roc_curve_png(y, scores, "ROC (test window)"),
        "score_distribution": plots.score_distribution_png(
            y, scores, "Scores by class (test window)"
        ),
    }
    days = [d["day"] for d in card_precision["days"]]
    by_day = {d["day"]: d for d in daily}
    images["card_precision_per_day"] = plots.metric_over_time_png(
        days,
        {
            f"card precision@{card_precision['k']}": [
                d["card_precision"] for d in card_precision["days"]
            ],
            "average_precision": [by_day.get(day, {}).get("average_precision") for day in days],
            f"recall at {budget}/day": [
                by_day.get(day, {}).get("recall_at_budget") for day in days
            ],
        },
        f"Test window per day (card precision@{card_precision['k']}, mean "
        f"{_fmt(card_precision['mean'])})",
    )
    return images


def write_report(result: ProtocolResult, out_dir: str | Path) -> Path:
    """``report.json``, one PNG per plot and ``scores.parquet`` (the window's scored rows) in
    ``out_dir``; returns the report's path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in result.plots.items():
        (folder / f"{name}.png").write_bytes(png)
    result.scored.write_parquet(folder / SCORES_FILE)
    path = folder / REPORT_FILE
    path.write_text(json.dumps(result.report, indent=2) + "\n")
    return path


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


__all__ = [
    "REPORT_FILE",
    "SCORES_FILE",
    "ProtocolConfig",
    "ProtocolResult",
    "run_protocol",
    "write_report",
]
