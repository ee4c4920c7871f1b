"""The platform's shared names, in one place: Delta tables (whose path is also the Dagster asset
key), Kafka topics and their message keys, the model, and the jobs other domains refer to.

Pure data: no Dagster, no I/O. ``dg.AssetKey(name.split("/"))`` turns a table name into its key.
"""

from __future__ import annotations

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, LABELS, TOPICS, TRANSACTIONS

# Kafka topics -> the event field used as the message key (Kafka keeps one key's events in order).
TOPIC_KEY_FIELDS: dict[str, str] = {
    TRANSACTIONS: "user_id",
    ACCOUNT_EVENTS: "user_id",
    LABELS: "transaction_id",
}

# Delta tables (= asset keys)
BRONZE_TABLES: dict[str, str] = {topic: f"bronze/{topic}" for topic in TOPICS}
DEAD_LETTER_TABLE = "bronze/dead_letter"
PROFILES_TABLE = "bronze/account_profiles"
PROFILES_REJECTED_TABLE = "bronze/account_profiles_rejected"
TRAINING_SET_TABLE = "training/fraud_training_set"
BACKTEST_SCORES_TABLE = "serving/backtest_scores"

MODEL_NAME = "fraud_catboost"
MODEL_ASSET = f"models/{MODEL_NAME}"
CHAMPION_ASSET = f"serving/{MODEL_NAME}_champion"
SERVED_TRAFFIC_PROFILE_ASSET = "monitoring/served_traffic_profile"

# Jobs a sensor or schedule of another domain refers to.
INGEST_JOB = "ingest_job"
FEATURE_REFRESH_JOB = "feature_refresh_job"
RETRAIN_JOB = "retrain_job"


def feature_table(versioned_group_name: str) -> str:
    return f"features/{versioned_group_name}"
