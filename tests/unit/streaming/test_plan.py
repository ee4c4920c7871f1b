"""The stream plan comes from the registry: every stream group maintained, batch-only ones not."""

import dataclasses

import dagster as dg
import pytest

from fraud_platform.definitions import defs
from fraud_platform.lib.features.catalog import ACCOUNT_PROFILE, FEATURE_GROUPS, MERCHANT_FRAUD
from fraud_platform.lib.streaming.plan import stream_plan


def test_stream_plan_maintains_every_stream_group_and_no_batch_only_one() -> None:
    plan = stream_plan(FEATURE_GROUPS)
    maintained = sorted(g.versioned_name for s in plan for g in s.groups)
    assert maintained == sorted(
        [
            "user_txn_velocity_v1",
            "user_txn_velocity_v2",
            "card_velocity_v1",
            "card_spending_v1",
            "account_security_v1",
            "user_device_history_v1",
            "user_country_history_v1",
            "merchant_activity_v1",
            "merchant_activity_v2",
            "counterparty_inbound_v1",
            "user_counterparty_history_v1",
        ]
    )
    assert not MERCHANT_FRAUD.stream and not ACCOUNT_PROFILE.stream
    by_name = {s.name: s for s in plan}
    user_txn = by_name["transactions:user"]
    # what the two velocity versions read, and the longest of their TTLs and windows
    assert set(user_txn.columns) >= {"event_time", "transaction_id", "amount", "channel"}
    # views of entities extending the user's read the user's store: one copy per event, kept
    # for the longest TTL or window of all of them (user_counterparty_history_v1: 180 days)
    assert [v.entity_name for v in user_txn.views] == [
        "user",
        "user_device",
        "user_country",
        "user_counterparty",
    ]
    assert "counterparty_id" in user_txn.columns
    assert user_txn.retention.days == 180
    assert by_name["transactions:card"].retention.days == 30
    assert "transactions:user_device" not in by_name
    # a view reads what its groups read, in the order its own store held it
    device = user_txn.views[1]
    assert device.columns == ("event_time", "transaction_id", "device_id", "user_id")
    assert by_name["account_events:user"].columns[:2] == ("event_time", "event_id")


def test_a_stream_group_whose_source_is_not_a_topic_is_refused() -> None:
    wrong = dataclasses.replace(ACCOUNT_PROFILE, stream=True)
    with pytest.raises(ValueError, match="stream=False"):
        stream_plan((wrong,))


def test_feature_stream_asset_reads_from_the_topics_and_has_its_check() -> None:
    graph = defs().resolve_asset_graph()
    key = dg.AssetKey(["online", "feature_stream"])
    node = graph.get(key)
    assert node.parent_keys == {
        dg.AssetKey(["kafka", "transactions"]),
        dg.AssetKey(["kafka", "account_events"]),
    }
    assert dg.AssetCheckKey(key, "feature_stream_is_current") in graph.asset_check_keys
