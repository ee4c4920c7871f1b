"""Decisions produced by the decision log land in bronze/scores exactly once, through the
Dagster asset (the platform's ``ingest_topic``), and monitoring reads them from there."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from fraud_platform.defs.ingestion.assets import BRONZE_KEYS
from fraud_platform.defs.ingestion.assets import defs as ingestion_defs
from fraud_platform.defs.monitoring.assets import served_traffic_profile
from fraud_platform.lib.contracts.events import SCHEMA_VERSION, SCORES
from fraud_platform.lib.monitoring.decisions import read_decisions, recent_dates
from fraud_platform.lib.monitoring.profiles import read_profile
from fraud_platform.lib.serving.decision_log import DecisionLog
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import DeltaResource, FilesResource, KafkaResource
from fraud_platform.tools.brokers import BrokerSpec

N = 60


def decision(i: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "schema_version": SCHEMA_VERSION,
        "request_id": uuid.uuid4().hex,
        "scored_at": now,
        "transaction_id": f"t-{uuid.uuid4().hex[:10]}",
        "event_time": now,
        "user_id": f"u{i % 7}",
        "card_id": f"c{i % 7}",
        "merchant_id": "m1",
        "merchant_category": "grocery",
        "amount": 10.0 + i,
        "currency": "EUR",
        "channel": "ecommerce",
        "counterparty_id": None,
        "device_id": "d1",
        "ip": "203.0.113.7",
        "country": "DE",
        "score": i / N,
        "decision": "approve" if i % 10 else "review",
        "model_version": "fraud_catboost:test",
        "feature_service": "fraud_scoring_v1",
        "degraded": False,
        "degraded_reason": None,
        "features": {"amount": 10.0 + i, "channel": "ecommerce", "user_txn_count_24h": float(i)},
        "feature_age_s": {"card_velocity_v1": 30.0},
        "reasons": [{"name": "amount", "value": 10.0 + i, "contribution": 0.1}],
    }


def test_scores_land_in_bronze_exactly_once_and_monitoring_reads_them(
    kafka_broker: BrokerSpec, tmp_path: Path
) -> None:
    resources = {
        "kafka": KafkaResource(bootstrap_servers=kafka_broker.bootstrap),
        "delta": DeltaResource(root=str(tmp_path / "delta")),
        "files": FilesResource(root=str(tmp_path)),
    }
    resources["kafka"].ensure_topics()  # creates scores with the platform's settings
    events = [decision(i) for i in range(N)]
    with DecisionLog(kafka_broker.bootstrap) as log:
        assert all(log.append(e) for e in events)
        assert log.flush(20) == 0
    bronze_asset = next(a for a in ingestion_defs.assets if BRONZE_KEYS[SCORES] in a.keys)

    first = dg.materialize([bronze_asset], resources=resources)
    assert first.success
    meta = first.asset_materializations_for_node(bronze_asset.node_def.name)[0].metadata
    assert meta["rows_added"].value == N and meta["rejected"].value == 0
    again = dg.materialize([bronze_asset], resources=resources)
    meta = again.asset_materializations_for_node(bronze_asset.node_def.name)[0].metadata
    assert meta["rows_added"].value == 0

    today, store = recent_dates(1)[1], DeltaStore(str(tmp_path / "delta"))
    frame = read_decisions(store, today, today)
    assert frame.height == N
    assert sorted(frame["request_id"]) == sorted(e["request_id"] for e in events)
    assert frame["f_amount"].sum() == sum(e["features"]["amount"] for e in events)
    assert frame["age_s_card_velocity_v1"].to_list() == [30.0] * N
    assert frame["reasons"].to_list()[0] == ["amount"]
    assert read_decisions(store, None, today - timedelta(days=1)).height == 0

    profiled = dg.materialize([served_traffic_profile], resources=resources)
    assert profiled.success
    profile = read_profile(tmp_path / "profiles" / "served_traffic_profile.bin")
    assert profile.rows == N
    assert {"amount", "user_txn_count_24h"} <= set(profile.columns)
