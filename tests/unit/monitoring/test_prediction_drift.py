"""Prediction drift: a shifted score distribution or decision mix is flagged, a like one not."""

from __future__ import annotations

import numpy as np
import pytest

from fraud_platform.lib.monitoring.prediction_drift import (
    bin_shares,
    decision_counts,
    decision_rate_drift,
    psi,
    score_drift,
)


def scores(n: int, seed: int, a: float = 1.0, b: float = 30.0) -> np.ndarray:
    return np.random.default_rng(seed).beta(a, b, n)  # mostly near 0, like fraud scores


def test_like_scores_do_not_drift() -> None:
    result = score_drift(scores(5000, 1), scores(1500, 2))
    assert result.psi < 0.05
    assert result.ks_pvalue > 0.01
    assert sum(result.reference_shares) == pytest.approx(1.0)
    assert result.reference_shares == pytest.approx([0.1] * 10, abs=0.002)


def test_shifted_scores_drift() -> None:
    result = score_drift(scores(5000, 1), scores(1500, 2, a=2.0, b=20.0))
    assert result.psi > 0.25
    assert result.ks_pvalue < 1e-6
    assert result.current_mean > 2 * result.reference_mean


def test_bin_shares_and_psi_by_hand() -> None:
    edges = np.array([0.1, 0.5])
    shares = bin_shares(np.array([0.05, 0.1, 0.2, 0.6]), edges)  # 0.1 falls in the lower bin
    assert shares.tolist() == [0.5, 0.25, 0.25]
    expected = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi(np.array([0.5, 0.5]), np.array([0.25, 0.75])) == pytest.approx(expected)


def test_decision_rate_drift_by_hand() -> None:
    reference = decision_counts(["approve"] * 970 + ["review"] * 20 + ["decline"] * 10)
    current = {"approve": 900, "review": 80, "decline": 20}
    result = decision_rate_drift(reference, current)
    assert result.reference_shares == {"approve": 0.97, "review": 0.02, "decline": 0.01}
    assert result.share_change["approve"] == pytest.approx(-0.07)
    assert result.share_change["review"] == pytest.approx(0.06)
    assert result.max_abs_share_change == pytest.approx(0.07)
    assert result.chi2_pvalue is not None and result.chi2_pvalue < 0.05


def test_decision_counts_rejects_unknown_decisions() -> None:
    with pytest.raises(ValueError, match="unknown decision"):
        decision_counts(["approve", "maybe"])
