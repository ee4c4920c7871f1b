"""The scoring path in process against the real Redis: lookup + ScoringModel + decision log."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from fraud_platform.lib.contracts.events import TRANSACTIONS, validate_record
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.serving.decision_log import DecisionLog
from fraud_platform.lib.serving.lookup import FeatureLookup
from fraud_platform.lib.serving.scoring import ScoringModel, decision_event
from fraud_platform.tools.brokers import BrokerSpec

from .conftest import REDIS_URL, Customer, Registered

pytestmark = pytest.mark.serving


@pytest.fixture(scope="module")
def scoring(registered_model: Registered) -> ScoringModel:
    return ScoringModel.from_metadata(
        registered_model.model, registered_model.metadata, registered_model.tag
    )


@pytest.fixture(scope="module")
def lookup() -> FeatureLookup:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=0.05, socket_connect_timeout=0.05)
    return FeatureLookup(client)


def record_of(customer: Customer, **overrides) -> dict:
    body = customer.transaction(**overrides)
    return validate_record(
        TRANSACTIONS, {"schema_version": 1, **body, "event_time": datetime.now(UTC).isoformat()}
    )


def test_lookup_reads_what_was_written(lookup: FeatureLookup, customer: Customer):
    found = lookup.lookup(record_of(customer))
    assert not found.degraded, found.degraded_reason
    assert found.values["user_txn_count_1h"] == 2
    assert found.values["user_amount_mean_30d"] == 40.0
    expected = customer.feature_time - timedelta(minutes=30)  # see conftest._group_value
    assert found.values["last_password_change_time"] == expected
    p2p_only = {g.versioned_name for g in FEATURE_GROUPS if "counterparty_id" in g.entity.join_keys}
    for group, age in found.age_seconds.items():
        if group in p2p_only:
            assert age is None, group  # a card payment has no counterparty: nothing to read
        else:
            assert 240 < age < 3_600, group


def test_new_device_is_not_degraded(lookup: FeatureLookup, customer: Customer):
    found = lookup.lookup(record_of(customer, device_id="d-never-seen"))
    assert not found.degraded
    assert found.age_seconds["user_device_history_v1"] is None


def test_inprocess_score_path_is_fast(
    scoring: ScoringModel, lookup: FeatureLookup, customer: Customer, decision_broker: BrokerSpec
):
    txn = record_of(customer)
    n = 500
    timings = []
    with DecisionLog(decision_broker.bootstrap) as log:
        for i in range(n + 50):
            started = time.perf_counter()
            found = lookup.lookup(txn)
            result = scoring.score(txn, found.values, degraded=found.degraded)
            log.append(
                decision_event(
                    request_id=f"r{i}",
                    scored_at=datetime.now(UTC),
                    txn=txn,
                    result=result,
                    lookup=found,
                    feature_service=scoring.service.name,
                )
            )
            timings.append((time.perf_counter() - started) * 1000)
        assert log.flush(20) == 0
        assert log.stats()["delivered"] == n + 50 and log.dropped == 0
    timings = sorted(timings[50:])
    p50, p99 = statistics.median(timings), timings[int(n * 0.99) - 1]
    print(f"\nin-process lookup+score+log (tiny model): p50 {p50:.3f} ms, p99 {p99:.3f} ms")
