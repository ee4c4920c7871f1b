"""Lifetime aggregates start again after a gap of ``compute.lifetime_gap`` (the group's TTL or
longest window): the rule the online path follows (its rows and its stores of events expire),
applied by the whole-history computation, by ranges continued from a lifetime state and by the
stream worker's rows of chosen points alike."""

import dataclasses
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_platform.lib.features.catalog import (
    ACCOUNT_SECURITY,
    FEATURE_GROUPS,
    USER_DEVICE_HISTORY,
)
from fraud_platform.lib.features.compute import compute_feature_group, lifetime_gap
from fraud_platform.lib.features.incremental import (
    compute_lifetime,
    compute_rows_from,
    is_incremental,
    lifetime_features,
    lifetime_state,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature
from fraud_platform.lib.features.targeted import SINCE, compute_rows_since, prepare_events
from fraud_platform.lib.simulation import SimulationConfig, simulate

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)
DAY = timedelta(days=1)
TS = pl.Datetime("us", "UTC")


def test_the_gap_is_the_ttl_or_the_longest_window() -> None:
    assert lifetime_gap(USER_DEVICE_HISTORY) == 90 * DAY  # no windows: the TTL
    assert lifetime_gap(ACCOUNT_SECURITY) == 30 * DAY  # windows up to 24 h, TTL 30 days


def test_a_device_unused_for_its_ttl_is_counted_from_one_again() -> None:
    times = [T0, T0 + DAY, T0 + 92 * DAY, T0 + 93 * DAY, T0 + 100 * DAY]
    source = pl.DataFrame(
        {"event_time": times, "user_id": ["u"] * 5, "device_id": ["d"] * 5},
        schema_overrides={"event_time": TS},
    )
    rows = compute_feature_group(USER_DEVICE_HISTORY, source).sort(FEATURE_TIME)
    assert rows["user_device_txn_count"].to_list() == [1, 2, 1, 2, 3]
    first_seen = rows["user_device_first_seen_time"].to_list()
    assert first_seen == [T0, T0, T0 + 92 * DAY, T0 + 92 * DAY, T0 + 92 * DAY]


def test_an_old_password_change_is_forgotten_after_a_month_without_account_events() -> None:
    events = [
        (T0, "password_change"),
        (T0 + 20 * DAY, "login"),  # within 30 days of the last event: carried on
        (T0 + 45 * DAY, "login"),  # 25 days after the last event: still carried on
        (T0 + 80 * DAY, "login"),  # 35 days without an event: starts again
    ]
    source = pl.DataFrame(
        {
            "event_time": [t for t, _ in events],
            "event_type": [e for _, e in events],
            "user_id": ["u"] * 4,
            "country": ["DE"] * 4,
            "device_id": ["d"] * 4,
        },
        schema_overrides={"event_time": TS},
    )
    rows = compute_feature_group(ACCOUNT_SECURITY, source).sort(FEATURE_TIME)
    assert rows["last_password_change_time"].to_list() == [T0, T0, T0, None]


def _warped(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    """Days 0-6 as simulated, days 7-13 moved 40 days later, days 14+ another 200 days later:
    gaps longer than the 30-day and than every group's gap (180 days at most)."""
    day = (pl.col(column) - pl.lit(T0)).dt.total_days()
    shift = pl.when(day < 7).then(0).when(day < 14).then(40).otherwise(240)
    return frame.with_columns(pl.col(column) + pl.duration(days=shift))


@pytest.fixture(scope="module")
def gapped_sources() -> dict[str, pl.DataFrame]:
    sim = simulate(SimulationConfig(days=21, users=60, merchants=15, seed=11, start=T0))
    transactions = pl.DataFrame(sim.transactions).with_columns(pl.col("event_time").cast(TS))
    labels = pl.DataFrame(sim.labels).with_columns(pl.col("label_time").cast(TS))
    frauds = labels.filter(pl.col("is_fraud")).join(
        transactions.select("transaction_id", "merchant_id"), on="transaction_id"
    )
    account = pl.DataFrame(sim.account_events).with_columns(pl.col("event_time").cast(TS))
    return {
        "fct_transactions": _warped(transactions, "event_time"),
        "fct_account_events": _warped(account, "event_time"),
        "fct_merchant_fraud_labels": _warped(frauds, "label_time"),
    }


GAPPED = [g for g in FEATURE_GROUPS if lifetime_features(g) and is_incremental(g)]
GAPPED = [g for g in GAPPED if g.source != "dim_account_profile_versions"]


@pytest.mark.parametrize("group", GAPPED, ids=lambda g: g.versioned_name)
def test_ranges_and_stream_points_restart_where_the_whole_history_does(
    group, gapped_sources
) -> None:
    source = gapped_sources[group.source]
    full = compute_feature_group(group, source)
    span = full.select(
        (pl.col(FEATURE_TIME).diff().over(ENTITY_KEY) >= lifetime_gap(group)).alias("restart")
    )
    assert span["restart"].any()  # the data have gaps this group restarts at
    # ranges starting before, at and after each gap of the data
    for start in (T0 + 3 * DAY, T0 + 45 * DAY + timedelta(hours=5), T0 + 250 * DAY, T0 + 256 * DAY):
        end = start + 8 * DAY
        state = lifetime_state(group, full.filter(pl.col(FEATURE_TIME) < start))
        part = compute_rows_from(group, source, start, end, state)
        expected = full.filter((pl.col(FEATURE_TIME) >= start) & (pl.col(FEATURE_TIME) < end))
        assert part.height == expected.height
        assert part.equals(expected), (group.versioned_name, start)
    if group.stream:
        since_us = int((T0 + 40 * DAY).timestamp() * 1_000_000)  # rows from the first gap on
        entities = full[ENTITY_KEY].unique().sort()
        since = pl.DataFrame({ENTITY_KEY: entities, SINCE: [since_us] * len(entities)})
        got = compute_rows_since(group, prepare_events(group, source), since)
        wanted = full.filter(pl.col(FEATURE_TIME).dt.epoch("us") >= since_us)
        assert got.height == wanted.height > 0
        assert_frame_equal(got, wanted, check_exact=True)


def test_the_lifetime_state_alone_restarts_after_the_longest_window_not_the_ttl() -> None:
    """``compute_lifetime`` leaves the windows out: its spans must still restart after the
    group's own gap (here the 7-day window, longer than the 1-day TTL)."""
    group = dataclasses.replace(
        USER_DEVICE_HISTORY,
        ttl=DAY,
        features=(
            *USER_DEVICE_HISTORY.features,
            Feature("user_device_txn_count_7d", "count", None, 7 * DAY, None, "int"),
        ),
    )
    times = [T0, T0 + 3 * DAY, T0 + 5 * DAY, T0 + 20 * DAY, T0 + 21 * DAY]
    source = pl.DataFrame(
        {"event_time": times, "user_id": ["u"] * 5, "device_id": ["d"] * 5},
        schema_overrides={"event_time": TS},
    )
    whole = lifetime_state(group, compute_feature_group(group, source))
    assert whole["user_device_txn_count"].to_list() == [2]  # restarted at day 20 only
    assert_frame_equal(lifetime_state(group, compute_lifetime(group, source)), whole)
