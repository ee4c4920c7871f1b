"""One verdict per check: status, severity, metadata and summary agree."""

from __future__ import annotations

import math

import dagster as dg
import pytest

from fraud_platform.defs.monitoring.verdicts import check_result
from fraud_platform.lib.monitoring.verdict import FAIL, NOT_JUDGED, PASS, WARN, judge, not_judged


@pytest.mark.parametrize(
    ("value", "status"),
    [(0.05, PASS), (0.1, PASS), (0.17, WARN), (0.3, WARN), (0.31, FAIL)],
)
def test_judge_higher_is_worse(value: float, status: str) -> None:
    assert judge("share_drifted", value, 0.3, 0.1).status == status


@pytest.mark.parametrize(("value", "status"), [(0.8, PASS), (0.6, WARN), (0.45, FAIL)])
def test_judge_lower_is_worse(value: float, status: str) -> None:
    assert judge("ap", value, 0.5, 0.7, higher_is_worse=False).status == status


def test_judge_refuses_a_warn_line_beyond_the_failing_one() -> None:
    with pytest.raises(ValueError, match="beyond the failing threshold"):
        judge("share_drifted", 0.2, 0.1, 0.3)


@pytest.mark.parametrize(
    ("verdict", "passed", "severity"),
    [
        (judge("share_drifted", 0.17, 0.3, 0.1), False, dg.AssetCheckSeverity.WARN),
        (judge("share_drifted", 0.5, 0.3, 0.1), False, dg.AssetCheckSeverity.ERROR),
        (judge("share_drifted", 0.0, 0.3, 0.1), True, dg.AssetCheckSeverity.ERROR),
        (not_judged("share_drifted", "12 rows", 0.3, 0.1), True, dg.AssetCheckSeverity.ERROR),
    ],
)
def test_check_result_status_matches_metadata(verdict, passed: bool, severity) -> None:
    result = check_result(verdict, plot=b"\x89PNG fake")
    assert result.passed is passed
    assert result.severity == severity
    meta = {k: v.value for k, v in result.metadata.items()}
    assert meta["status"] == verdict.status
    assert meta["threshold"] == 0.3 and meta["warn_threshold"] == 0.1
    assert result.description == meta["summary"]
    assert ("not judged" if verdict.status == NOT_JUDGED else verdict.status) in meta["summary"]
    assert verdict.summary in meta["plot"]  # the plot's caption is the same line
    if verdict.status == NOT_JUDGED:
        assert meta["value"] is None and "12 rows" in meta["summary"]
    else:
        assert math.isclose(meta["value"], verdict.value)


def test_summary_reads_the_figure_and_both_thresholds() -> None:
    assert judge("share_drifted", 0.17, 0.3, 0.1).summary == (
        "share_drifted = 0.17 (warn > 0.1, fail > 0.3): WARN"
    )
