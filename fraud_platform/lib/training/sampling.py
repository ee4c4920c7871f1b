"""A row budget for the training set: negative downsampling with inverse-rate weights.

A year of history holds millions of matured transactions, and the point-in-time join and the
fits hold every row (11.25 GB for 2.32M rows at 365 days x 2,000 users). Above the budget:

* every fraud is kept, and every row of the newest ``whole_days`` (the validation and test
  parts and their gaps: ``time_split`` takes them from the end), so thresholds, metrics and the
  promotion gate are computed on the traffic as it was, unweighted;
* of the legitimate rows before that window, ``max_rows`` minus the frauds among them are drawn
  uniformly (a fixed seed: the same input gives the same rows), each weighted by the inverse of
  the rate it was drawn at, so a fit that uses ``SAMPLE_WEIGHT`` sees the classes in their true
  proportion (and CatBoost's scores keep their scale).

So the fitted rows are at most ``max_rows`` whatever the history's length; the window's rows
grow with users x ``whole_days`` only. Below the budget nothing changes (no weight column).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import polars as pl

from fraud_platform.lib.model.input import LABEL_COLUMN, TIME_COLUMN

SAMPLE_WEIGHT = "sample_weight"
DEFAULT_MAX_TRAIN_ROWS = 1_000_000


@dataclass(frozen=True)
class RowBudget:
    """At most ``max_rows`` rows before the newest ``whole_days`` (which are kept whole)."""

    max_rows: int = DEFAULT_MAX_TRAIN_ROWS
    whole_days: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.whole_days < 0:
            raise ValueError(
                f"a row budget needs max_rows >= 1 and whole_days >= 0, got {self.max_rows} "
                f"and {self.whole_days}"
            )


@dataclass(frozen=True)
class Downsampled:
    frame: pl.DataFrame
    legit_rate: float  # the share of legitimate rows before the window that was kept (1: all)
    dropped: int
    whole_from: datetime | None  # rows from here on were kept whole (None: nothing sampled)

    def summary(self) -> dict[str, object]:
        return {
            "legit_rate": round(self.legit_rate, 6),
            "dropped_rows": self.dropped,
            "kept_rows": self.frame.height,
            "whole_from": self.whole_from.isoformat() if self.whole_from else None,
        }


def downsample_legit(frame: pl.DataFrame, budget: RowBudget) -> Downsampled:
    """``frame`` (labelled rows sorted by time) within ``budget`` (see the module doc)."""
    if frame.is_empty():
        return Downsampled(frame, 1.0, 0, None)
    whole_from: datetime = frame[TIME_COLUMN].max() - timedelta(days=budget.whole_days)  # type: ignore[operator]
    before = (frame[TIME_COLUMN] < whole_from).to_numpy()
    legit = ~frame[LABEL_COLUMN].to_numpy().astype(bool)
    candidates = np.flatnonzero(before & legit)
    room = budget.max_rows - int((before & ~legit).sum())
    if room >= candidates.size:  # within the budget
        return Downsampled(frame, 1.0, 0, None)
    if room < 1:
        raise ValueError(
            f"the training row budget ({budget.max_rows:,}) is below the frauds before the last "
            f"{budget.whole_days:g} days ({int((before & ~legit).sum()):,}): raise max_train_rows"
        )
    rng = np.random.default_rng(budget.seed)
    kept = rng.choice(candidates, size=room, replace=False, shuffle=False)
    weights = np.ones(frame.height)
    weights[candidates] = 0.0
    weights[kept] = candidates.size / room
    rate = room / candidates.size
    weighted = frame.with_columns(pl.Series(SAMPLE_WEIGHT, weights)).filter(
        pl.col(SAMPLE_WEIGHT) > 0
    )
    return Downsampled(weighted, rate, candidates.size - room, whole_from)


def weights_of(frame: pl.DataFrame) -> np.ndarray | None:
    """The rows' sample weights, or None when the frame was not downsampled."""
    return frame[SAMPLE_WEIGHT].to_numpy() if SAMPLE_WEIGHT in frame.columns else None


def fit_weights(frame: pl.DataFrame) -> dict[str, np.ndarray]:
    """Keyword arguments that pass the rows' weights to a scikit-learn pipeline's ``fit``
    (whose last step is named ``classifier``); none when the frame was not downsampled."""
    weights = weights_of(frame)
    return {} if weights is None else {"classifier__sample_weight": weights}


def require_unweighted(frame: pl.DataFrame, part: str, remedy: str = "") -> None:
    """Raise when ``part`` (validation, test) holds downsampled rows: its metrics and thresholds
    would be computed on a population that is not the traffic's."""
    weights = weights_of(frame)
    if weights is not None and bool((weights != 1.0).any()):
        raise ValueError(
            f"the {part} holds downsampled rows (sample_weight != 1), on which metrics would "
            "not be the traffic's; "
            + (
                remedy
                or "the training set kept fewer days whole than this split evaluates on: "
                "rebuild it with a larger whole_days, or a split that fits in it"
            )
        )
