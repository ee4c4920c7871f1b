"""Which candidate (CatBoost or a baseline, trained on one split) a training run puts forward:
the best validation AP, optionally only by a margin of paired-bootstrap standard errors."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Selection:
    chosen: str
    reason: str
    validation_average_precision: dict[str, float]


def select_candidate(
    validation_average_precision: Mapping[str, float],
    preference: Sequence[str] = (),
    gain_standard_errors: Mapping[str, float] | None = None,
    min_gain_se: float = 2.0,
) -> Selection:
    """The candidate (by name, e.g. its model kind) with the highest validation AP.

    Candidates were trained on the same split and features; ties go to the earlier name in
    ``preference`` (then to the earlier key), and an undefined (NaN) AP never wins. With
    ``gain_standard_errors`` (per candidate, the bootstrap standard error of its AP minus the
    first preferred candidate's on the same validation rows), a candidate replaces the preferred
    one only when it beats it by more than ``min_gain_se`` standard errors: a validation window
    with a few hundred frauds otherwise picks by noise. Raises ``ValueError`` when no candidate
    has a defined AP.
    """
    order = [
        *preference,
        *(name for name in validation_average_precision if name not in preference),
    ]
    ranked = [
        (float(validation_average_precision[name]), -position, name)
        for position, name in enumerate(order)
        if name in validation_average_precision
        and not math.isnan(float(validation_average_precision[name]))
    ]
    if not ranked:
        raise ValueError(
            f"no candidate has a defined validation AP: {dict(validation_average_precision)}"
        )
    incumbent = next((name for name in preference if name in {r[2] for r in ranked}), None)
    held_back: list[str] = []
    if gain_standard_errors and incumbent is not None:
        base = float(validation_average_precision[incumbent])
        eligible = []
        for ap, position, name in ranked:
            se = gain_standard_errors.get(name)
            if name == incumbent or se is None or ap - base > min_gain_se * se:
                eligible.append((ap, position, name))
            elif ap > base:
                held_back.append(
                    f"{name} {ap:.4f} is not better than {incumbent} {base:.4f} by more than "
                    f"{min_gain_se:g} standard errors ({min_gain_se * se:.4f})"
                )
        ranked = eligible
    value, _, chosen = max(ranked)
    others = ", ".join(
        f"{name} {ap:.4f}" for ap, _, name in sorted(ranked, reverse=True) if name != chosen
    )
    reason = f"{chosen} has the best validation AP {value:.4f}" + (
        f" (then {others})" if others else ""
    )
    if held_back:
        reason += "; " + "; ".join(held_back)
    return Selection(
        chosen=chosen,
        reason=reason,
        validation_average_precision={k: float(v) for k, v in validation_average_precision.items()},
    )


def ap_gain_standard_error(
    y_true: np.ndarray,
    base_scores: np.ndarray,
    other_scores: np.ndarray,
    n_boot: int = 100,
    seed: int = 0,
) -> float:
    """Paired bootstrap standard error of AP(other) - AP(base) on the same rows."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true).astype(bool)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(n_boot):
        rows = rng.integers(0, y.size, y.size)
        if not y[rows].any():
            continue
        gains.append(
            average_precision_score(y[rows], other_scores[rows])
            - average_precision_score(y[rows], base_scores[rows])
        )
    return float(np.std(gains, ddof=1)) if len(gains) > 1 else math.inf
