"""Check messages pair each figure with its threshold, as the check's metadata names them."""

import pytest

from fraud_platform.lib.notifications.messages import (
    CheckOutcome,
    check_message,
    figure_and_threshold,
)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"value": 0.42, "threshold": 0.3, "rows": 900}, ("value", 0.42, "threshold", 0.3)),
        (
            {"test_auc_roc": 0.91, "test_average_precision": 0.51, "min_auc_roc": 0.8,
             "min_average_precision": 0.6},
            ("test_auc_roc", 0.91, "min_auc_roc", 0.8),
        ),
        ({"compared": 400, "worst_mismatch_rate": 0.02, "limit": 0.01},
         ("worst_mismatch_rate", 0.02, "limit", 0.01)),
        ({"share_drifted": 0.2, "note": "text"}, ("share_drifted", 0.2, None, None)),
    ],
)  # fmt: skip
def test_figure_and_threshold_pairs_by_name(metadata: dict, expected: tuple) -> None:
    figure = figure_and_threshold(metadata)
    assert figure is not None
    assert (figure.name, figure.value, figure.threshold_name, figure.threshold) == expected


def test_figure_and_threshold_none_without_numbers() -> None:
    assert figure_and_threshold({"note": "too little traffic", "ok": True}) is None


def test_check_message_names_everything_a_person_needs() -> None:
    outcome = CheckOutcome(
        asset="monitoring/served_traffic_profile",
        check="served_features_have_not_drifted",
        passed=False,
        severity="ERROR",
        run_id="abc-123",
        partition="2026-11-20",
        description="7 of 48 features drifted",
        metadata={"value": 0.1458, "threshold": 0.1, "served_rows": 5210},
    )
    text = check_message(outcome, "https://dagster.internal/")
    assert text.splitlines() == [
        "[ERROR] fraud-platform check failed: served_features_have_not_drifted on "
        "monitoring/served_traffic_profile [2026-11-20]",
        "value = 0.1458 vs threshold threshold = 0.1",
        "7 of 48 features drifted",
        "also: served_rows=5210",
        "asset: monitoring/served_traffic_profile, partition: 2026-11-20",
        "run: https://dagster.internal/runs/abc-123",
        "checks: https://dagster.internal/assets/monitoring/served_traffic_profile?view=checks",
    ]
