"""Partitions shared by several domains (not a domain of its own)."""

from datetime import date

import dagster as dg

from fraud_platform.settings import Settings

# Daily partitions by feature_time (UTC) from FRAUD_PLATFORM_PARTITIONS_START (read when the
# definitions load); today included so the live day can be refreshed.
FEATURE_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=Settings.from_env().partitions_start.isoformat(), end_offset=1
)


class EventsOutsidePartitions(ValueError):
    """Events fall outside the feature partitions: their features would silently be missing."""


def check_within_partitions(first: date, last: date) -> None:
    """Raise ``EventsOutsidePartitions`` naming both ranges unless ``first..last`` fits."""
    keys = FEATURE_PARTITIONS.get_partition_keys()
    start, end = date.fromisoformat(keys[0]), date.fromisoformat(keys[-1])
    if first < start or last > end:
        raise EventsOutsidePartitions(
            f"events from {first} to {last} fall outside the feature partitions {start} .. "
            f"{end}: their features would be missing. Set FRAUD_PLATFORM_PARTITIONS_START="
            f"{min(first, start)} (or earlier) and run again."
        )
