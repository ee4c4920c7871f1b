"""Partitions shared by several domains (not a domain of its own)."""

import dagster as dg

# Daily partitions by feature_time (UTC); today included so the live day can be refreshed.
FEATURE_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_offset=1)
