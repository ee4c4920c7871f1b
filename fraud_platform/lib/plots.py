"""PNG charts for asset metadata (evaluation curves, importances, drift).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly: no pyplot, so
no global figure registry and nothing to close; safe in threads and long-lived processes.
``png_markdown`` wraps a PNG as a base64 data URI that Dagster renders in ``MetadataValue.md``.
matplotlib is imported lazily (it is only needed when a chart is drawn).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fraud_platform.lib.evaluation import (
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 100
SIZE = (6.0, 4.0)
STATUS_COLOURS = {"DRIFT": "#d62728", "POSSIBLE_DRIFT": "#ff7f0e", "NO_DRIFT": "#2ca02c"}


def _figure(size: tuple[float, float] = SIZE) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def png_markdown(png: bytes, title: str) -> str:
    """Markdown embedding the PNG: ``![title](data:image/png;base64,...)``."""
    alt = title.replace("[", "(").replace("]", ")")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def pr_curve_png(y_true: Any, scores: Any, title: str = "Precision-recall") -> bytes:
    precision, recall, _ = precision_recall_curve(y_true, scores)
    y = np.asarray(y_true, dtype=bool)
    fig, ax = _figure()
    ax.step(
        recall,
        precision,
        where="post",
        color="#1f77b4",
        label=f"AP = {average_precision(y_true, scores):.3f}",
    )
    ax.axhline(
        y.mean() if y.size else 0.0,
        color="grey",
        linestyle="--",
        linewidth=1,
        label=f"base rate = {y.mean() if y.size else 0.0:.4f}",
    )
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    return _png(fig)


def roc_curve_png(y_true: Any, scores: Any, title: str = "ROC") -> bytes:
    fpr, tpr, _ = roc_curve(y_true, scores)
    fig, ax = _figure()
    ax.plot(fpr, tpr, color="#1f77b4", label=f"AUC = {roc_auc(y_true, scores):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=title,
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _png(fig)


def score_distribution_png(
    y_true: Any, scores: Any, title: str = "Score distribution", bins: int = 50
) -> bytes:
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    edges = np.linspace(
        min(0.0, float(s.min(initial=0.0))), max(1.0, float(s.max(initial=1.0))), bins + 1
    )
    fig, ax = _figure()
    ax.hist(
        s[~y],
        bins=edges,
        density=True,
        alpha=0.6,
        color="#2ca02c",
        label=f"legit (n={int((~y).sum())})",
    )
    ax.hist(
        s[y],
        bins=edges,
        density=True,
        alpha=0.6,
        color="#d62728",
        label=f"fraud (n={int(y.sum())})",
    )
    ax.set(xlabel="score", ylabel="density", title=title)
    ax.set_yscale("log")
    ax.legend(loc="upper center")
    return _png(fig)


def feature_importance_png(
    names: Sequence[str], values: Sequence[float], title: str = "Feature importance", top: int = 25
) -> bytes:
    order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")[:top]
    shown_names = [str(names[i]) for i in order][::-1]
    shown_values = [float(values[i]) for i in order][::-1]
    fig, ax = _figure((6.0, max(2.5, 0.3 * len(shown_names) + 1.0)))
    ax.barh(shown_names, shown_values, color="#1f77b4")
    ax.set(xlabel="importance", title=title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def drift_png(report: Any, title: str = "Feature drift") -> bytes:
    """Bar per column: -log10(p-value) coloured by status, with the PSI written next to it.

    ``report`` is a ``monitoring.DriftReport`` or its ``to_dict()``.
    """
    data: Mapping[str, Any] = report.to_dict() if hasattr(report, "to_dict") else report
    columns = data["columns"]
    names = list(columns)
    strengths, colours, labels = [], [], []
    for name in names:
        col = columns[name]
        p = col.get("pvalue")
        strengths.append(-np.log10(max(p, 1e-300)) if p is not None else 0.0)
        colours.append(STATUS_COLOURS.get(col.get("status", ""), "grey"))
        psi = col.get("psi")
        labels.append(f"PSI {psi:.2f}" if psi is not None else "")
    fig, ax = _figure((6.0, max(2.5, 0.35 * len(names) + 1.2)))
    y = np.arange(len(names))
    ax.barh(y, strengths, color=colours)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    for yi, strength, label in zip(y, strengths, labels, strict=True):
        if label:
            ax.text(strength, yi, f" {label}", va="center", fontsize=8)
    for status, threshold in (("DRIFT", 0.05), ("POSSIBLE_DRIFT", 0.15)):
        ax.axvline(
            -np.log10(threshold),
            color=STATUS_COLOURS[status],
            linestyle="--",
            linewidth=1,
            label=f"p = {threshold}",
        )
    share = data.get("share_drifted")
    suffix = f" ({share:.0%} of columns drifted)" if share is not None else ""
    ax.set(xlabel="-log10(p-value)", title=title + suffix)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)
