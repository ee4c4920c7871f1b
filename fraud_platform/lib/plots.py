"""PNG charts for asset metadata (evaluation curves, importances, drift).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly: no pyplot, so
no global figure registry and nothing to close; safe in threads and long-lived processes.
``png_markdown`` wraps a PNG as a base64 data URI that Dagster renders in ``MetadataValue.md``.
matplotlib is imported lazily (it is only needed when a chart is drawn).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fraud_platform.lib.training.metrics import (
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


def pr_curves_png(
    y_true: Any, scores_by_model: Mapping[str, Any], title: str = "Precision-recall by model"
) -> bytes:
    """The precision-recall curves of several models scored on the same labelled rows."""
    y = np.asarray(y_true, dtype=bool)
    fig, ax = _figure()
    for name, scores in scores_by_model.items():
        precision, recall, _ = precision_recall_curve(y_true, scores)
        ap = average_precision(y_true, scores)
        ax.step(recall, precision, where="post", label=f"{name}: AP = {ap:.3f}")
    base = y.mean() if y.size else 0.0
    ax.axhline(base, color="grey", linestyle="--", linewidth=1, label=f"base rate = {base:.4f}")
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


def _column(values: Any, j: int) -> np.ndarray:
    """Column ``j`` of a polars/pandas frame, a 2-D array or a list of rows (object array)."""
    if hasattr(values, "iloc"):  # pandas
        return np.asarray(values.iloc[:, j].to_numpy())
    if hasattr(values, "to_series"):  # polars
        return np.asarray(values.to_series(j).to_numpy())
    if isinstance(values, np.ndarray):
        return values[:, j]
    return np.asarray([row[j] for row in values], dtype=object)


def _normalised_colour_values(column: np.ndarray) -> np.ndarray:
    """Feature values scaled to [0, 1] by their 5th-95th percentiles; NaN when not numeric."""
    try:
        x = np.asarray(column, dtype=np.float64)
    except (TypeError, ValueError):
        return np.full(column.shape[0], np.nan)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.full(x.shape, np.nan)
    lo, hi = np.percentile(finite, [5, 95])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.where(np.isfinite(x), 0.5, np.nan)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _swarm_offsets(values: np.ndarray, width: float = 0.4, bins: int = 60) -> np.ndarray:
    """Vertical offsets that pile points sharing a SHAP-value bin around the row's centre."""
    n = values.size
    if n == 0:
        return np.zeros(0)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else 1.0
    bin_index = np.clip(((values - lo) / span * bins).astype(np.int64), 0, bins - 1)
    order = np.lexsort((np.arange(n), bin_index))
    sorted_bins = bin_index[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_bins)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    offset = np.zeros(n)
    offset[order] = np.ceil(rank / 2.0) * np.where(rank % 2 == 0, 1.0, -1.0)
    peak = float(np.abs(offset).max())
    return offset * (width / peak) if peak > 0 else offset


def shap_summary_png(
    shap_values: np.ndarray,
    feature_values: Any,
    feature_names: Sequence[str],
    max_features: int = 15,
    title: str = "SHAP summary",
) -> bytes:
    """Beeswarm-like SHAP summary: one row per feature (largest mean |SHAP| on top), each point
    a sampled transaction at its SHAP value, coloured by its feature value (blue low, red high;
    grey for categorical or missing values).

    ``shap_values``: (rows, features) without the expected-value column. ``feature_values``: the
    same rows' model-input values (polars/pandas frame, 2-D array or list of rows).
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    shap = np.asarray(shap_values, dtype=np.float64)
    if shap.ndim != 2 or shap.shape[1] != len(feature_names):
        raise ValueError(
            f"shap_values must be (rows, {len(feature_names)} features), got {shap.shape}"
        )
    mean_abs = np.abs(shap).mean(axis=0) if shap.shape[0] else np.zeros(shap.shape[1])
    order = np.argsort(-mean_abs, kind="stable")[: max(1, max_features)]
    cmap = colormaps["coolwarm"]
    fig, ax = _figure((7.0, max(2.5, 0.45 * len(order) + 1.4)))
    for row, j in enumerate(order[::-1]):
        x = shap[:, j]
        colour_values = _normalised_colour_values(_column(feature_values, int(j)))
        colours = cmap(np.nan_to_num(colour_values, nan=0.5))
        colours[~np.isfinite(colour_values)] = (0.6, 0.6, 0.6, 1.0)  # categorical or missing
        ax.scatter(
            x,
            row + _swarm_offsets(x),
            c=colours,
            s=8,
            alpha=0.8,
            linewidths=0,
            rasterized=True,
        )
    ax.set_yticks(range(len(order)), [str(feature_names[j]) for j in order[::-1]])
    ax.axvline(0.0, color="grey", linewidth=1)
    ax.set(xlabel="SHAP value (log-odds contribution to the fraud score)", title=title)
    ax.grid(axis="x", alpha=0.3)
    colourbar = fig.colorbar(
        ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=ax, ticks=[0.0, 1.0], pad=0.02
    )
    colourbar.ax.set_yticklabels(["low", "high"])
    colourbar.set_label("feature value")
    return _png(fig)


def metric_over_time_png(
    days: Sequence[Any],
    values_by_metric: Mapping[str, Sequence[float | None]],
    title: str = "Metrics over time",
) -> bytes:
    """One line per metric over ``days`` (e.g. daily AUC, AP, recall at budget of the test
    period); ``None``/NaN values leave a gap."""
    labels = [str(day) for day in days]
    x = np.arange(len(labels))
    fig, ax = _figure((7.0, 4.0))
    for name, values in values_by_metric.items():
        if len(values) != len(labels):
            raise ValueError(f"metric {name!r} has {len(values)} values for {len(labels)} days")
        y = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        ax.plot(x, y, marker="o", markersize=4, label=name)
    step = max(1, math.ceil(len(labels) / 12))
    ax.set_xticks(x[::step], labels[::step], rotation=45, ha="right", fontsize=8)
    ax.set(xlabel="day", ylabel="value", ylim=(0, 1.02), title=title)
    if values_by_metric:
        ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)
