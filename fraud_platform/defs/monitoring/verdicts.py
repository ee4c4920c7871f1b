"""A ``lib.monitoring.verdict.Verdict`` as a Dagster check result: one outcome shown as the
status, the metadata and the plot (see ``lib/monitoring/verdict.py``)."""

from typing import Any

import dagster as dg

from fraud_platform.lib import plots
from fraud_platform.lib.monitoring.verdict import FAIL, WARN, Verdict


def check_result(
    verdict: Verdict,
    *,
    check_name: str | None = None,
    asset_key: dg.AssetKey | None = None,
    metadata: dict[str, Any] | None = None,
    plot: bytes | None = None,
) -> dg.AssetCheckResult:
    """FAIL: failed, ERROR severity; WARN: failed, WARN severity; PASS / NOT_JUDGED: passed.
    ``description`` is the verdict's one-line summary; ``plot`` (a PNG) is shown as ``plot``."""
    extra = dict(metadata or {})
    if plot is not None:
        extra["plot"] = dg.MetadataValue.md(plots.png_markdown(plot, verdict.summary))
    return dg.AssetCheckResult(
        check_name=check_name,
        asset_key=asset_key,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN
        if verdict.status == WARN
        else dg.AssetCheckSeverity.ERROR,
        description=verdict.summary,
        metadata={**verdict.metadata(), **extra},
    )


def is_failure(verdict: Verdict) -> bool:
    return verdict.status == FAIL
