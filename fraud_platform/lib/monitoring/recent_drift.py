"""Daily feature drift against the days just before, with per-feature limits calibrated on
those days' own day-to-day variation.

Why not the training reference alone: measured in ``benchmarks/drift_recovery.py`` (quick
world, no drift at all), a served day against the training set's last 7 days had 16-18 of 58
features "drifted" (share 0.28-0.31, at the 0.3 limit) on every day, because the reference is
one to two weeks old: lifetime counts (``user_device_txn_count``), 30-day windows still filling
and labels still arriving (``merchant_fraud_labels_7d``) move every day whatever happens. The
real switch (amounts +30%, ecommerce and p2p up) moved ``channel`` by a PSI of 0.08 and
``amount`` by 0.03 on its first day: under the fixed ``min_psi`` of 0.1, and lost among the
ageing features.

So a day D is compared with the merged profiles of the served days before it (``history``,
typically the last 7), and each feature gets its own limit: the largest PSI any history day
showed against the other history days (leave one day out), times ``factor``, never below
``floor_psi``. A feature whose PSI moves this much every day (a merchant count over a handful
of big merchants) gets a wide limit; one that is steady from day to day (the channel mix) a
narrow one. A feature counts as drifted when its PSI exceeds its limit and its KS /
chi-square p-value is below 0.05 (``drift.DRIFT_PVALUE``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fraud_platform.lib.monitoring.drift import DRIFT, DRIFT_PVALUE, NO_DRIFT, DriftReport
from fraud_platform.lib.monitoring.drift import drift_report as profile_drift
from fraud_platform.lib.monitoring.profiles import ProfileSummary, merge_profiles
from fraud_platform.lib.training.metrics import json_safe

FACTOR = 1.5
FLOOR_PSI = 0.02


@dataclass(frozen=True)
class CalibratedDrift:
    """``report`` (the day against the merged history) and, per feature, the limit its PSI was
    judged by and the day-to-day PSIs of the history the limit came from."""

    report: DriftReport
    limits: dict[str, float]
    history_psi: dict[str, list[float]]
    history_days: int
    factor: float
    floor_psi: float

    @property
    def drifted_columns(self) -> list[str]:
        return [c for c, col in self.report.columns.items() if col.status == DRIFT]

    @property
    def share_drifted(self) -> float:
        return self.report.share_drifted

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out.update(
            {
                "reference": f"served traffic of the {self.history_days} previous days",
                "factor": self.factor,
                "floor_psi": self.floor_psi,
            }
        )
        for name, column in out["columns"].items():
            column["psi_limit"] = self.limits.get(name)
            column["history_psi_max"] = max(self.history_psi.get(name) or [0.0])
        return json_safe(out)


def _judged(report: DriftReport, limits: dict[str, float]) -> DriftReport:
    """``report`` with each column's status set by its own PSI limit (a column that went
    missing on one side has no PSI: its p-value decides, as in ``drift.drift_status``)."""
    from dataclasses import replace

    columns = {}
    for name, col in report.columns.items():
        significant = col.pvalue is not None and col.pvalue < DRIFT_PVALUE
        beyond = col.psi is None or col.psi > limits[name]
        columns[name] = replace(col, status=DRIFT if significant and beyond else NO_DRIFT)
    return replace(report, columns=columns, min_psi=None)


def calibrated_drift(
    history: Sequence[ProfileSummary],
    current: ProfileSummary,
    columns: Sequence[str],
    *,
    factor: float = FACTOR,
    floor_psi: float = FLOOR_PSI,
) -> CalibratedDrift:
    """``current`` against the merged ``history`` (at least 2 days), each column judged by its
    calibrated PSI limit (module doc)."""
    if len(history) < 2:
        raise ValueError(f"calibrated_drift needs at least 2 history days, got {len(history)}")
    if factor < 1 or floor_psi < 0:
        raise ValueError(f"factor must be >= 1 and floor_psi >= 0 (got {factor}, {floor_psi})")
    history_psi: dict[str, list[float]] = {c: [] for c in columns}
    for left_out in range(len(history)):
        others = merge_profiles([h for i, h in enumerate(history) if i != left_out])
        for name, col in profile_drift(others, history[left_out], columns).columns.items():
            if col.psi is not None:
                history_psi[name].append(col.psi)
    limits = {c: max(floor_psi, factor * max(history_psi[c] or [0.0])) for c in columns}
    raw = profile_drift(merge_profiles(history), current, columns)
    return CalibratedDrift(
        report=_judged(raw, limits),
        limits=limits,
        history_psi=history_psi,
        history_days=len(history),
        factor=factor,
        floor_psi=floor_psi,
    )
