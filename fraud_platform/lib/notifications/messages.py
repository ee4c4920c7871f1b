"""Readable messages about failed or warned asset checks, with links into the Dagster UI.

A check states its figure and the limit it was held to in its metadata. The platform's
convention is the pair ``value`` / ``threshold``; older checks name them after what they
measure (``test_average_precision`` beside ``min_average_precision``, ``worst_mismatch_rate``
beside ``limit``), so those are paired too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

THRESHOLD_KEYS = ("threshold", "limit", "margin")
THRESHOLD_PREFIXES = ("max_", "min_")
MAX_DETAILS = 6
# Without a name match, a figure named like a measurement beats a count ("compared", "rows").
MEASURE_WORDS = ("rate", "share", "ratio", "worst", "lag", "age", "psi", "precision", "auc")


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check evaluation, in plain values."""

    asset: str  # "monitoring/served_traffic_profile"
    check: str
    passed: bool
    severity: str  # "ERROR" or "WARN"
    run_id: str
    partition: str | None = None
    description: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)

    @property
    def level(self) -> str:
        return "warning" if self.severity == "WARN" else "failure"


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    threshold_name: str | None = None
    threshold: float | None = None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _is_threshold(name: str) -> bool:
    return (
        name in THRESHOLD_KEYS or name.startswith(THRESHOLD_PREFIXES) or name.endswith("_threshold")
    )


def figure_and_threshold(metadata: Mapping[str, object]) -> Figure | None:
    """The measured figure and the threshold it was held to, as the check's metadata says."""
    numbers = {k: n for k, v in metadata.items() if (n := _number(v)) is not None}
    if "value" in numbers:
        threshold = numbers.get("threshold")
        return Figure("value", numbers["value"], "threshold" if threshold is not None else None,
                      threshold)  # fmt: skip
    thresholds = [k for k in numbers if _is_threshold(k)]
    figures = [k for k in numbers if not _is_threshold(k) and not k.startswith("dagster/")]
    for limit in thresholds:
        base = limit.removeprefix("max_").removeprefix("min_").removesuffix("_threshold")
        for name in figures:
            if name == base or name.endswith(f"_{base}"):
                return Figure(name, numbers[name], limit, numbers[limit])
    figures.sort(key=lambda name: not any(word in name for word in MEASURE_WORDS))
    if figures:
        limit = thresholds[0] if thresholds else None
        return Figure(figures[0], numbers[figures[0]], limit, numbers[limit] if limit else None)
    return None


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def asset_url(ui_url: str, asset: str) -> str:
    return f"{ui_url.rstrip('/')}/assets/{quote(asset)}?view=checks"


def run_url(ui_url: str, run_id: str) -> str:
    return f"{ui_url.rstrip('/')}/runs/{run_id}"


def check_title(outcome: CheckOutcome) -> str:
    where = f"{outcome.asset}" + (f" [{outcome.partition}]" if outcome.partition else "")
    verb = "warned" if outcome.level == "warning" else "failed"
    return f"fraud-platform check {verb}: {outcome.check} on {where}"


def check_message(outcome: CheckOutcome, ui_url: str) -> str:
    """A few lines a person can act on: what failed, the figure against its threshold, where
    (asset, partition, run), and links to the run and the asset's checks."""
    lines = [f"[{outcome.severity}] {check_title(outcome)}"]
    figure = figure_and_threshold(outcome.metadata)
    if figure is not None:
        against = (
            f" vs threshold {figure.threshold_name} = {_fmt(figure.threshold)}"
            if figure.threshold is not None
            else " (no threshold in the check's metadata)"
        )
        lines.append(f"{figure.name} = {_fmt(figure.value)}{against}")
    if outcome.description:
        lines.append(outcome.description)
    shown = {figure.name, figure.threshold_name} if figure else set()
    details = [
        f"{k}={_fmt(n)}"
        for k, v in outcome.metadata.items()
        if k not in shown and (n := _number(v)) is not None
    ][:MAX_DETAILS]
    if details:
        lines.append("also: " + ", ".join(details))
    lines.append(f"asset: {outcome.asset}" + (f", partition: {outcome.partition}"
                                              if outcome.partition else ""))  # fmt: skip
    lines.append(f"run: {run_url(ui_url, outcome.run_id)}")
    lines.append(f"checks: {asset_url(ui_url, outcome.asset)}")
    return "\n".join(lines)
