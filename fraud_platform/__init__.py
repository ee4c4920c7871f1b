"""fraud_platform: a real-time fraud-detection ML platform on Dagster."""

__version__ = "0.1.0"
