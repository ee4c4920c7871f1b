"""One rule for every monitoring check: a figure, the threshold it is judged by, the outcome.

A check's status, its metadata and its plot must tell the same story, so each check computes a
``Verdict`` once and shows it everywhere: the Dagster status (``FAIL``: failed, ERROR severity;
``WARN``: failed, WARN severity, for a figure that is notable but under the failing threshold;
``PASS``: passed), the metadata (``value``, ``threshold``, ``warn_threshold``, ``status``,
``summary``) and the plot's title (``summary``).

``NOT_JUDGED`` is for a figure that cannot be computed honestly yet (too little traffic, too few
labelled frauds): the check passes (it cannot fail on missing evidence) and says why, with
``value`` null.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"
NOT_JUDGED = "NOT_JUDGED"


def _fmt(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.4g}"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class Verdict:
    metric: str
    status: str
    value: float | None
    threshold: float
    warn_threshold: float | None
    higher_is_worse: bool
    reason: str = ""  # why NOT_JUDGED

    @property
    def passed(self) -> bool:
        return self.status in (PASS, NOT_JUDGED)

    @property
    def summary(self) -> str:
        """One line: figure, thresholds, outcome (``share_drifted = 0.17 (warn > 0.1, fail >
        0.3): WARN``)."""
        worse = ">" if self.higher_is_worse else "<"
        lines = f"fail {worse} {_fmt(self.threshold)}"
        if self.warn_threshold is not None:
            lines = f"warn {worse} {_fmt(self.warn_threshold)}, {lines}"
        if self.status == NOT_JUDGED:
            return f"{self.metric} not judged ({lines}): {self.reason}"
        return f"{self.metric} = {_fmt(self.value)} ({lines}): {self.status}"

    def metadata(self) -> dict[str, Any]:
        """The keys every monitoring check carries (readers such as notifications rely on
        them): ``metric``, ``value``, ``threshold``, ``warn_threshold``, ``status``,
        ``summary``."""
        return {
            "metric": self.metric,
            "value": _finite(self.value),
            "threshold": _finite(self.threshold),
            "warn_threshold": _finite(self.warn_threshold),
            "higher_is_worse": self.higher_is_worse,
            "status": self.status,
            "summary": self.summary,
        }


def judge(
    metric: str,
    value: float,
    threshold: float,
    warn_threshold: float | None = None,
    *,
    higher_is_worse: bool = True,
) -> Verdict:
    """FAIL beyond ``threshold``, WARN beyond ``warn_threshold`` (strictly), else PASS.

    "Beyond" is above when ``higher_is_worse`` (a drift share), below otherwise (an AP)."""
    if warn_threshold is not None:
        inverted = warn_threshold > threshold if higher_is_worse else warn_threshold < threshold
        if inverted:
            raise ValueError(
                f"{metric}: warn threshold {warn_threshold} lies beyond the failing threshold "
                f"{threshold}"
            )
    if value is None or not math.isfinite(value):
        raise ValueError(f"{metric}: cannot judge a missing value (use not_judged)")
    if not math.isfinite(threshold):
        raise ValueError(f"{metric}: the threshold must be a number, got {threshold}")

    def beyond(limit: float) -> bool:
        return value > limit if higher_is_worse else value < limit

    if beyond(threshold):
        status = FAIL
    elif warn_threshold is not None and beyond(warn_threshold):
        status = WARN
    else:
        status = PASS
    return Verdict(metric, status, float(value), threshold, warn_threshold, higher_is_worse)


def not_judged(
    metric: str,
    reason: str,
    threshold: float,
    warn_threshold: float | None = None,
    *,
    higher_is_worse: bool = True,
) -> Verdict:
    return Verdict(
        metric, NOT_JUDGED, None, threshold, warn_threshold, higher_is_worse, reason=reason
    )
