"""whylogs profiles: what the monitoring assets store, and what the drift check compares.

whylogs is used only in ``lib/monitoring`` (and imported lazily), so it can be swapped: whylogs
1.6.4 had its last release in 2024 and needs numpy<2.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from fraud_platform.lib.training.evaluation import json_safe

if TYPE_CHECKING:
    from whylogs.core import DatasetProfileView

FREQUENT_ITEMS = 10  # in profile summaries


def _whylogs() -> Any:
    """Import whylogs with its usage telemetry off.

    whylogs posts usage statistics to stats.whylogs.com from a thread started at import time
    (and joins it at exit); ``WHYLOGS_NO_ANALYTICS`` must be set before the first import.
    """
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
    import whylogs

    return whylogs


def _dataset_profile_view_class() -> Any:
    _whylogs()
    from whylogs.core import DatasetProfileView

    return DatasetProfileView


def _column_summary(view: DatasetProfileView, column: str) -> dict[str, Any]:
    col = view.get_column(column)
    counts = col.get_metric("counts")
    summary: dict[str, Any] = {
        "count": int(counts.n.value) if counts else None,
        "null_count": int(counts.null.value) if counts else None,
    }
    distribution = col.get_metric("distribution")
    if distribution is not None and not distribution.kll.value.is_empty():
        d = distribution.to_summary_dict()
        summary.update(
            {
                "mean": d["mean"],
                "stddev": d["stddev"],
                "min": d["min"],
                "max": d["max"],
                "quantiles": {
                    key: d[key]
                    for key in ("q_01", "q_05", "q_25", "median", "q_75", "q_95", "q_99")
                },
            }
        )
    cardinality = col.get_metric("cardinality")
    if cardinality is not None:
        summary["distinct_estimate"] = float(cardinality.to_summary_dict()["est"])
    frequent = col.get_metric("frequent_items")
    if frequent is not None:
        items = frequent.to_summary_dict().get("frequent_strings", [])[:FREQUENT_ITEMS]
        summary["frequent_items"] = [{"value": i.value, "count": int(i.est)} for i in items]
    return json_safe(summary)


@dataclass(frozen=True)
class ProfileSummary:
    """A whylogs profile (``view``) and a JSON-serialisable digest of it per column."""

    view: DatasetProfileView
    rows: int
    columns: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": self.columns}


def _summarise(view: DatasetProfileView, columns: Sequence[str] | None = None) -> ProfileSummary:
    names = list(columns) if columns is not None else sorted(view.get_columns())
    summaries = {name: _column_summary(view, name) for name in names}
    rows = max((s["count"] or 0 for s in summaries.values()), default=0)
    return ProfileSummary(view=view, rows=rows, columns=summaries)


def profile_frame(frame: pl.DataFrame, columns: Sequence[str]) -> ProfileSummary:
    """Profile ``columns`` of a polars frame with whylogs (``why.log(pandas).view()``)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"profile_frame: the frame has no columns {missing}")
    why = _whylogs()
    view = why.log(frame.select(list(columns)).to_pandas()).view()
    return _summarise(view, columns)


def write_profile(profile: ProfileSummary | DatasetProfileView, path: str | Path) -> Path:
    """Write the whylogs binary profile to ``path`` (atomically: temp file, then rename)."""
    view = profile.view if isinstance(profile, ProfileSummary) else profile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(view.serialize())
    tmp.replace(path)
    return path


def read_profile(path: str | Path) -> ProfileSummary:
    """Read a profile written by ``write_profile`` (or any whylogs binary profile)."""
    view = _dataset_profile_view_class().deserialize(Path(path).read_bytes())
    return _summarise(view)


def merge_profiles(profiles: Sequence[ProfileSummary]) -> ProfileSummary:
    """One profile of the rows of all ``profiles`` (whylogs sketches merge exactly for counts
    and within the KLL error for distributions)."""
    if not profiles:
        raise ValueError("merge_profiles needs at least one profile")
    view = profiles[0].view
    for profile in profiles[1:]:
        view = view.merge(profile.view)
    return _summarise(view)
