"""Partitions shared by several domains (not a domain of its own)."""

from datetime import date

import dagster as dg

from fraud_platform.settings import Settings, SettingsError

_SETTINGS = Settings.from_env()
# Daily partitions by feature_time (UTC) from FRAUD_PLATFORM_PARTITIONS_START (read when the
# definitions load); today included so the live day can be refreshed.
FEATURE_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=_SETTINGS.partitions_start.isoformat(), end_offset=1
)

# Entity-hash shards of the sharded feature backfill (FRAUD_PLATFORM_FEATURE_SHARDS; 1 = none).
FEATURE_SHARDS = _SETTINGS.feature_shards
if FEATURE_SHARDS < 1:
    raise SettingsError(f"FRAUD_PLATFORM_FEATURE_SHARDS={FEATURE_SHARDS}: at least 1")
DATE_DIMENSION = "date"
SHARD_DIMENSION = "shard"


def sharded_feature_partitions(shards: int) -> dg.MultiPartitionsDefinition:
    """date x shard: one run per (day, entity-hash shard) in a backfill."""
    return dg.MultiPartitionsDefinition(
        {
            DATE_DIMENSION: FEATURE_PARTITIONS,
            SHARD_DIMENSION: dg.StaticPartitionsDefinition([str(k) for k in range(shards)]),
        }
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
