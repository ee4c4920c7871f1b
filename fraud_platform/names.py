"""The platform's shared names, in one place: Delta tables (whose path is also the Dagster asset
key), the model, and the jobs other domains refer to. Topics and their message keys are part of
the event contract (``lib/contracts/events.py``: ``TOPICS``, ``KEY_FIELD``).

Pure data: no Dagster, no I/O. ``dg.AssetKey(name.split("/"))`` turns a table name into its key.
"""

from __future__ import annotations

from fraud_platform.lib.contracts.events import SCORES, TOPICS


# Delta tables (= asset keys)
def bronze_table(topic: str) -> str:
    """The bronze table of a topic (any topic: test and prefixed topic names too)."""
    return f"bronze/{topic}"


BRONZE_TABLES: dict[str, str] = {topic: bronze_table(topic) for topic in TOPICS}
SCORES_TABLE = bronze_table(SCORES)  # the scoring service's decisions (not a feature source)
DEAD_LETTER_TABLE = "bronze/dead_letter"
PROFILES_TABLE = "bronze/account_profiles"
PROFILES_REJECTED_TABLE = "bronze/account_profiles_rejected"
TRAINING_SET_TABLE = "training/fraud_training_set"
REGISTRY_TABLE = "registry/model_events"
BACKTEST_SCORES_TABLE = "serving/backtest_scores"
RUN_RECORDS_TABLE = "notifications/run_records"  # key figures of every successful model run

MODEL_NAME = "fraud_catboost"
MODEL_ASSET = f"models/{MODEL_NAME}"
CHAMPION_ASSET = f"serving/{MODEL_NAME}_champion"
BACKTEST_ASSET = "serving/fraud_backtest"
SERVED_TRAFFIC_PROFILE_ASSET = "monitoring/served_traffic_profile"
# Daily monitoring (partitioned by decision date): one row per day (and model role) each.
DAILY_FEATURE_DRIFT_TABLE = "monitoring/daily_feature_drift"
DAILY_PREDICTION_DRIFT_TABLE = "monitoring/daily_prediction_drift"
DAILY_REALIZED_PERFORMANCE_TABLE = "monitoring/daily_realized_performance"
SHADOW_SCORES_TABLE = "monitoring/shadow_scores"  # the challenger's scores, never served

FEATURE_STREAM_ASSET = "online/feature_stream"  # the stream worker (observable source asset)
FEATURE_STREAM_CONSUMER_GROUP = "fraud-platform-feature-stream"


def topic_asset(topic: str) -> str:
    """A Kafka topic as an external asset (lineage into the stream)."""
    return f"kafka/{topic}"


# Jobs a sensor or schedule of another domain refers to.
INGEST_JOB = "ingest_job"
DECISION_LOG_JOB = "decision_log_job"
FEATURE_REFRESH_JOB = "feature_refresh_job"
RETRAIN_JOB = "retrain_job"
# Runs with the same value of this tag run one at a time (the QueuedRunCoordinator's tag
# concurrency limit, ``tools/instance.py``); later ones wait in the queue.
RUN_QUEUE_TAG = "fraud_platform/run_queue"
# minimum_interval_seconds of the sensors on the event-driven path. Dagster's sensor daemon
# evaluates sensors in a loop started every 5 s; a 5 s minimum, measured from the previous
# tick's own (later) timestamp, is at times not yet reached at the next loop: such a sensor
# then waited 10 s (2 of 12 gaps in one benchmark run). With 1 s it ticks on every loop.
EVENT_SENSOR_INTERVAL_S = 1
# Metadata of an asset check (a dbt test) that the arrivals sensor's ingestion runs leave out:
# scheduled, UI and CI runs still evaluate it.
SKIPPED_ON_ARRIVAL = "fraud_platform/skipped_on_arrival"
# Run tag of the arrivals sensor's ingestion runs (the events waiting per topic, JSON): their
# dbt tests check the newly ingested rows only (dbt_project/macros/test_scope.sql).
ARRIVALS_TAG = "arrivals"


FEATURE_DATE = "feature_date"  # the feature tables' daily partition column (UTC date)


def feature_table(versioned_group_name: str) -> str:
    return f"features/{versioned_group_name}"


def feature_state_table(versioned_group_name: str) -> str:
    """Each entity's lifetime state at the start of recent days (incremental partitions)."""
    return f"feature_state/{versioned_group_name}"


# the model-store label ``stage`` of a refit's held-out twin (registered only to defend the refit
# at the promotion gate)
HELDOUT_STAGE = "heldout"
