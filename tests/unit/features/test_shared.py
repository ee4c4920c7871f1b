"""Groups computed once per stream view (``features/shared.py``): which group serves which, and
that a served group's renamed rows equal its own ``compute_feature_group`` column by column."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_platform.lib.features.catalog import (
    CARD_VELOCITY,
    MERCHANT_ACTIVITY,
    MERCHANT_ACTIVITY_V2,
    USER_TXN_VELOCITY,
    USER_TXN_VELOCITY_V2,
)
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.shared import served_groups
from fraud_platform.lib.features.windows import stored_group
from fraud_platform.lib.simulation import SimulationConfig, simulate

START = datetime(2026, 10, 1, tzinfo=UTC)


def _served(*groups: FeatureGroup) -> dict[str, str]:
    return {s.group.versioned_name: s.computed.versioned_name for s in served_groups(groups)}


def test_a_version_whose_columns_another_holds_is_served_from_it() -> None:
    assert _served(USER_TXN_VELOCITY, USER_TXN_VELOCITY_V2) == {
        "user_txn_velocity_v1": "user_txn_velocity_v2",
        "user_txn_velocity_v2": "user_txn_velocity_v2",
    }
    assert _served(MERCHANT_ACTIVITY_V2, MERCHANT_ACTIVITY) == {
        "merchant_activity_v2": "merchant_activity_v2",
        "merchant_activity_v1": "merchant_activity_v2",
    }


def test_groups_are_not_shared_when_their_values_could_differ() -> None:
    # another TTL moves the lifetime gap: lifetime aggregates and prefix totals restart elsewhere
    longer = dataclasses.replace(USER_TXN_VELOCITY_V2, version=3, ttl=timedelta(days=60))
    assert _served(USER_TXN_VELOCITY, longer)["user_txn_velocity_v1"] == "user_txn_velocity_v1"
    # a feature of the same name with another window
    changed = dataclasses.replace(
        USER_TXN_VELOCITY_V2,
        version=3,
        features=tuple(
            dataclasses.replace(f, window=timedelta(hours=2))
            if f.name == "user_txn_count_1h"
            else f
            for f in USER_TXN_VELOCITY_V2.features
        ),
    )
    assert _served(USER_TXN_VELOCITY, changed)["user_txn_velocity_v1"] == "user_txn_velocity_v1"
    # another entity
    assert _served(CARD_VELOCITY, USER_TXN_VELOCITY) == {
        "card_velocity_v1": "card_velocity_v1",
        "user_txn_velocity_v1": "user_txn_velocity_v1",
    }


def test_equal_groups_are_both_served_from_the_first() -> None:
    twin = dataclasses.replace(USER_TXN_VELOCITY, name="user_txn_twin")
    assert _served(USER_TXN_VELOCITY, twin) == {
        "user_txn_velocity_v1": "user_txn_velocity_v1",
        "user_txn_twin_v1": "user_txn_velocity_v1",
    }


@pytest.mark.parametrize(
    ("group", "other"),
    [(USER_TXN_VELOCITY, USER_TXN_VELOCITY_V2), (MERCHANT_ACTIVITY, MERCHANT_ACTIVITY_V2)],
    ids=["user_txn_velocity", "merchant_activity"],
)
def test_served_rows_equal_the_groups_own_rows(group: FeatureGroup, other: FeatureGroup) -> None:
    sim = simulate(SimulationConfig(days=12, users=40, merchants=10, seed=5, start=START))
    events = pl.DataFrame(sim.transactions).with_columns(
        pl.col("event_time").cast(pl.Datetime("us", "UTC"))
    )
    served = next(s for s in served_groups((group, other)) if s.group is group)
    assert served.computed is other
    theirs = compute_feature_group(other, events)
    keys = group.entity.join_keys
    renamed = theirs.select(
        ENTITY_KEY,
        *keys,
        FEATURE_TIME,
        *[pl.col(c).alias(mine) for c, mine in served.columns.items()],
    )
    own = compute_feature_group(group, events)
    columns = [ENTITY_KEY, *keys, FEATURE_TIME, *[f.name for f in stored_group(group).features]]
    assert own.height > 100
    assert_frame_equal(renamed.select(columns), own.select(columns))
