"""Assets every layer of the platform must have (one per layer), checked by the definitions
test and the end-to-end pipeline test."""

LAYER_ASSETS = (
    "bronze/transactions",
    "silver/fct_transactions",
    "gold/agg_user_daily",
    "features/user_txn_velocity_v1",
    "online/feature_snapshot",
    "training/fraud_training_set",
    "models/fraud_catboost",
    "serving/fraud_catboost_champion",
)
