"""PNG charts of the daily monitoring assets (``plots.png_markdown`` embeds them in metadata).

Each chart's title carries the check's verdict line (figure, thresholds, outcome), so the plot
says what the check says. Built on a ``matplotlib.figure.Figure`` with the Agg canvas, as
``lib/plots.py`` does (no pyplot state).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fraud_platform.lib.serving.policy import DECISIONS

DPI = 100
THRESHOLD_COLOURS = {"fail": "#d62728", "warn": "#ff7f0e", "reference": "#7f7f7f"}
STATUS_COLOURS = {"FAIL": "#d62728", "WARN": "#ff7f0e", "PASS": "#2ca02c", "NOT_JUDGED": "grey"}


def _figure(size: tuple[float, float], columns: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI, layout="constrained")  # makes room for suptitles
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, columns, i + 1) for i in range(columns)]


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _wrap(title: str, width: int = 70) -> str:
    words, lines, line = title.split(), [], ""
    for word in words:
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])


def over_time_png(
    days: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    thresholds: Mapping[str, float | None],
    title: str,
    ylabel: str,
    statuses: Sequence[str] | None = None,
) -> bytes:
    """One line per series over ``days``; dashed lines at ``thresholds`` ({"fail": x, "warn":
    y, ...}); with ``statuses`` (one per day, of the first series) each point is coloured by
    its day's verdict."""
    x = np.arange(len(days))
    fig, (ax,) = _figure((7.5, 4.0))
    for index, (name, values) in enumerate(series.items()):
        y = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        ax.plot(x, y, marker="o", markersize=4, label=name, zorder=2)
        if index == 0 and statuses is not None:
            colours = [STATUS_COLOURS.get(s, "grey") for s in statuses]
            ax.scatter(x, y, c=colours, s=36, zorder=3)
    for name, value in thresholds.items():
        if value is not None and math.isfinite(value):
            ax.axhline(
                value,
                color=THRESHOLD_COLOURS.get(name, "grey"),
                linestyle="--",
                linewidth=1,
                label=f"{name} {value:g}",
            )
    step = max(1, math.ceil(len(days) / 12))
    ax.set_xticks(x[::step], list(days)[::step], rotation=45, ha="right", fontsize=8)
    ax.set(xlabel="decision date (UTC)", ylabel=ylabel)
    ax.set_title(_wrap(title), fontsize=9)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def prediction_drift_png(score: Mapping[str, Any], rates: Mapping[str, Any], title: str) -> bytes:
    """Left: score shares per reference-quantile bin, validation vs the day. Right: decision
    shares, validation vs the day. ``score`` / ``rates``: ``ScoreDrift`` / ``DecisionRateDrift``
    ``to_dict()``."""
    fig, (left, right) = _figure((9.0, 4.0), columns=2)
    ref, cur = np.array(score["reference_shares"]), np.array(score["current_shares"])
    x = np.arange(ref.size)
    width = 0.4
    left.bar(x - width / 2, ref, width, color="#7f7f7f", label="validation")
    left.bar(x + width / 2, cur, width, color="#1f77b4", label="this day")
    edges = [f"{e:.3g}" for e in score["bin_edges"]]
    labels = [f"≤{edges[0]}" if edges else "all"]
    labels += [f"≤{e}" for e in edges[1:]] + ([f">{edges[-1]}"] if edges else [])
    left.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    left.set(
        xlabel="score bin (validation quantiles)",
        ylabel="share of decisions",
        title=f"scores: KS {score['ks_statistic']:.3f}, PSI {score['psi']:.3f}",
    )
    left.legend(fontsize=8)
    xd = np.arange(len(DECISIONS))
    right.bar(
        xd - width / 2,
        [rates["reference_shares"][d] for d in DECISIONS],
        width,
        color="#7f7f7f",
        label="validation",
    )
    right.bar(
        xd + width / 2,
        [rates["current_shares"][d] for d in DECISIONS],
        width,
        color="#1f77b4",
        label="this day",
    )
    right.set_xticks(xd, list(DECISIONS))
    right.set_yscale("log")
    right.set(
        ylabel="share (log)",
        title=f"decisions: max change {rates['max_abs_share_change']:.3f}",
    )
    right.legend(fontsize=8)
    fig.suptitle(_wrap(title, 100), fontsize=9)
    return _png(fig)


def realized_png(
    by_role: Mapping[str, Mapping[str, Any]], test_ap: float | None, floor: float | None, title: str
) -> bytes:
    """Left: fraud amount caught and lost (approved) per channel, per model role. Right: the
    realized AP of each role against the served model's test AP and the failing floor."""
    fig, (left, right) = _figure((9.0, 4.0), columns=2)
    channels = sorted({c for perf in by_role.values() for c in perf.get("by_channel", {})})
    x = np.arange(len(channels))
    width = 0.8 / max(1, 2 * len(by_role))
    offset = -0.4 + width / 2
    for role, perf in by_role.items():
        per = perf.get("by_channel", {})
        for key, hatch in (("fraud_amount_caught", ""), ("money_lost", "//")):
            values = [per.get(c, {}).get(key, 0.0) for c in channels]
            left.bar(x + offset, values, width, hatch=hatch, label=f"{role}: {key}")
            offset += width
    left.set_xticks(x, channels, rotation=30, ha="right", fontsize=8)
    left.set(ylabel="amount of known frauds", title="caught vs lost, by channel")
    left.legend(fontsize=7)
    roles = list(by_role)
    aps = [by_role[r].get("average_precision") for r in roles]
    right.bar(roles, [a if a is not None else 0.0 for a in aps], color="#1f77b4")
    for index, ap in enumerate(aps):
        right.text(index, ap or 0.0, "n/a" if ap is None else f"{ap:.3f}", ha="center", va="bottom")
    if test_ap is not None:
        right.axhline(test_ap, color="#7f7f7f", linestyle="--", label=f"test AP {test_ap:.3f}")
    if floor is not None:
        right.axhline(floor, color="#d62728", linestyle="--", label=f"fail < {floor:.3f}")
    right.set(ylim=(0, 1.02), ylabel="average precision (labels so far)", title="realized AP")
    right.legend(fontsize=8)
    fig.suptitle(_wrap(title, 100), fontsize=9)
    return _png(fig)


def feature_drift_png(report: Mapping[str, Any], title: str) -> bytes:
    """Bar per feature: -log10(p-value) coloured by drift status, PSI beside it; the title (a
    verdict line) is wrapped across the figure. ``report``: ``DriftReport.to_dict()``."""
    columns = report["columns"]
    names = list(columns)
    colours = {"DRIFT": "#d62728", "POSSIBLE_DRIFT": "#ff7f0e", "NO_DRIFT": "#2ca02c"}
    strengths = [
        -math.log10(max(c["pvalue"], 1e-300)) if c.get("pvalue") is not None else 0.0
        for c in columns.values()
    ]
    fig, (ax,) = _figure((7.0, max(2.5, 0.3 * len(names) + 1.6)))
    y = np.arange(len(names))
    ax.barh(y, strengths, color=[colours.get(c.get("status"), "grey") for c in columns.values()])
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    for yi, strength, col in zip(y, strengths, columns.values(), strict=True):
        if col.get("psi") is not None:
            limit = col.get("psi_limit")
            text = f" PSI {col['psi']:.3f}" + (f" (limit {limit:.3f})" if limit is not None else "")
            ax.text(strength, yi, text, va="center", fontsize=7)
    for status, p in report.get("thresholds", {}).items():
        ax.axvline(-math.log10(p), color=colours.get(status, "grey"), linestyle="--", linewidth=1)
    limit = "its limit" if report.get("factor") else "min PSI"
    ax.set(xlabel=f"-log10(p-value); red = drifted (p < 0.05 and PSI above {limit})")
    fig.suptitle(_wrap(title, 80), fontsize=9)
    return _png(fig)
