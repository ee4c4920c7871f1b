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
    FEATURE_GROUPS,
    MERCHANT_ACTIVITY,
    MERCHANT_ACTIVITY_V2,
    USER_TXN_VELOCITY,
    USER_TXN_VELOCITY_V2,
)
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.online.layout import encode_rows, online_key
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.shared import hosts_in, hosts_of, served_groups, storage_host
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


def test_a_catalog_version_is_stored_in_the_latest_version_holding_its_columns() -> None:
    hosts = {g.versioned_name: storage_host(g).versioned_name for g in FEATURE_GROUPS}
    assert hosts["user_txn_velocity_v1"] == "user_txn_velocity_v2"
    assert hosts["merchant_activity_v1"] == "merchant_activity_v2"
    assert hosts["merchant_fraud_v1"] == "merchant_fraud_v2"
    others = {n: h for n, h in hosts.items() if n.endswith("_v2") or n not in _V1_HOSTED}
    assert all(name == host for name, host in others.items())
    assert sorted(g.versioned_name for g in hosts_of(FEATURE_GROUPS)) == sorted(
        g.versioned_name for g in FEATURE_GROUPS if g.versioned_name not in _V1_HOSTED
    )
    # the same key, never written as version 1: its member would replace a version 2 row
    assert online_key(USER_TXN_VELOCITY, "u") == online_key(USER_TXN_VELOCITY_V2, "u")
    rows = pl.DataFrame({ENTITY_KEY: ["u"], FEATURE_TIME: [datetime(2026, 1, 1, tzinfo=UTC)]})
    with pytest.raises(ValueError, match="served from user_txn_velocity_v2's online rows"):
        encode_rows(USER_TXN_VELOCITY, rows)


_V1_HOSTED = {"user_txn_velocity_v1", "merchant_activity_v1", "merchant_fraud_v1"}


def test_no_host_with_another_ttl_or_outside_the_catalog() -> None:
    v1, v2 = USER_TXN_VELOCITY, USER_TXN_VELOCITY_V2
    assert {n: h.versioned_name for n, (_, h) in hosts_in((v1, v2)).items()} == {
        "user_txn_velocity_v1": "user_txn_velocity_v2"
    }
    # another TTL (the longest window sets both groups' lifetime gap: the same rows)
    assert hosts_in((dataclasses.replace(v1, ttl=timedelta(days=1)), v2)) == {}
    assert hosts_in((v2, dataclasses.replace(v1, version=3))) == {}  # only a later version
    # v2 without v1's 24 h withdrawal sum does not hold v1's columns
    thinner = dataclasses.replace(
        v2, features=tuple(f for f in v2.features if f.name != "user_withdrawal_sum_24h")
    )
    assert hosts_in((v1, thinner)) == {}
    longer = dataclasses.replace(v1, ttl=v1.ttl * 2)
    assert storage_host(longer) is longer  # not the catalog's group: its own keys
    assert storage_host(v2) is v2
    assert storage_host(CARD_VELOCITY) is CARD_VELOCITY
