"""The incremental online snapshot leaves a real Redis exactly as the full snapshot does, and
reads and writes only what changed (real Delta tables, real Redis)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.online.history import online_history
from fraud_platform.lib.features.online.layout import online_key
from fraud_platform.lib.features.online.snapshot import checkpoint_key, snapshot_group
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.storage.delta import DeltaStore
from tests.redis_server import redis_db_url

pytestmark = pytest.mark.integration
INCREMENTAL_DB = redis_db_url(13)  # flushed by this module's tests
FULL_DB = redis_db_url(14)
DAY = "feature_date"
TABLE = "features/card_velocity_v1"
# recent, so the keys are not already past their TTL on the wall clock that Redis expires by
START = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=6)
GROUP = next(g for g in FRAUD_SCORING_V1.groups if g.name == "card_velocity")


@pytest.fixture
def stores() -> Iterator[tuple[redis.Redis, redis.Redis]]:
    clients = tuple(
        redis.Redis.from_url(url, socket_timeout=5) for url in (INCREMENTAL_DB, FULL_DB)
    )
    for client in clients:
        client.flushdb()
    yield clients
    for client in clients:
        client.flushdb()
        client.close()


def _transactions(seed: int, users: int, n: int, first: datetime, hours: float) -> pl.DataFrame:
    """``n`` transactions of ``users`` users at distinct seconds in [first, first + hours)."""
    rng = random.Random(seed)
    seconds = rng.sample(range(int(hours * 3600)), n)
    rows = []
    for i, second in enumerate(seconds):
        user = f"u{rng.randrange(users)}"
        rows.append(
            {
                "transaction_id": f"t{seed}-{i}",
                "user_id": user,
                "card_id": f"{user}-c{rng.randint(0, 1)}",
                "device_id": f"{user}-d0",
                "country": "DE",
                "merchant_id": f"m{rng.randint(0, 9)}",
                "merchant_category": "grocery",
                "channel": "ecommerce",
                "counterparty_id": None,
                "amount": round(rng.uniform(1, 300), 2),
                "event_time": first + timedelta(seconds=second),
            }
        )
    return pl.DataFrame(
        rows,
        schema_overrides={"event_time": pl.Datetime("us", "UTC"), "counterparty_id": pl.String},
    )


def _rows(group: FeatureGroup, events: pl.DataFrame) -> pl.DataFrame:
    return compute_feature_group(group, events.sort("event_time")).with_columns(
        pl.col(FEATURE_TIME).dt.date().alias(DAY)
    )


def _write(delta: DeltaStore, rows: pl.DataFrame, first: date, last: date) -> int:
    part = rows.filter(pl.col(DAY).is_between(first, last))
    return delta.replace_range(TABLE, part, partition_column=DAY, first=first, last=last)


def _dump(client: redis.Redis) -> dict[bytes, tuple[list, int]]:
    """Every key's rows (member, score) and absolute expiry, the snapshot checkpoint left out."""
    out = {}
    for key in client.scan_iter(count=1000):
        if key.decode() == checkpoint_key():
            continue
        out[key] = (client.zrange(key, 0, -1, withscores=True), client.pexpiretime(key))
    return out


def _scores(client: redis.Redis) -> set[tuple[str, int]]:
    return {
        (key.decode(), int(score)) for key, (rows, _) in _dump(client).items() for _, score in rows
    }


def _full_snapshot(client: redis.Redis, delta: DeltaStore, version: int) -> None:
    """The snapshot as it was before it became incremental: every entity's kept rows (the
    group has windows as of the lookup: ``online_history``)."""
    write_snapshot(client, GROUP, online_history(GROUP, delta.read(TABLE, version=version)))


def _changed_entities(delta: DeltaStore, before: int, after: int) -> int:
    """Entities with a row that differs between two versions (computed from whole tables)."""
    columns = [ENTITY_KEY, FEATURE_TIME, *GROUP.feature_names]
    old, new = (delta.read(TABLE, version=v).select(columns) for v in (before, after))
    differs = pl.concat(
        [
            new.join(old, on=columns, how="anti", nulls_equal=True),
            old.join(new, on=columns, how="anti", nulls_equal=True),
        ]
    )
    return differs[ENTITY_KEY].n_unique()


def test_incremental_snapshot_equals_full_and_touches_only_changed_entities(
    tmp_path: Path, stores: tuple[redis.Redis, redis.Redis]
) -> None:
    incremental, full = stores
    delta = DeltaStore(str(tmp_path / "delta"))
    days = [(START + timedelta(days=d)).date() for d in range(6)]
    history = _transactions(1, users=60, n=3000, first=START, hours=6 * 24 - 1)
    rows = _rows(GROUP, history)
    v1 = _write(delta, rows, days[0], days[-1])

    first = snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)
    assert (first.mode, first.reason) == ("full", "no checkpoint in the online store")
    assert first.rows_read == rows.height
    _full_snapshot(full, delta, v1)
    assert _dump(incremental) == _dump(full)

    unchanged = snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)
    assert (unchanged.mode, unchanged.rows_read, unchanged.entities_written) == ("unchanged", 0, 0)

    # one new hour of a few users, plus a late event three days back: partitions 3..5 stale
    new_hour = _transactions(
        2, users=8, n=40, first=START + timedelta(days=6) - timedelta(hours=1), hours=1
    )
    late = _transactions(3, users=60, n=1, first=START + timedelta(days=3, hours=5), hours=1)
    rows = _rows(GROUP, pl.concat([history, new_hour, late]))
    v2 = _write(delta, rows, days[3], days[-1])

    second = snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)
    _full_snapshot(full, delta, v2)
    assert _dump(incremental) == _dump(full)
    # rows were only added: the store holds exactly what the rule keeps of the whole table
    kept = online_history(GROUP, delta.read(TABLE, version=v2))
    assert _scores(incremental) == {
        (online_key(GROUP, k), t)
        for k, t in kept.select(ENTITY_KEY, pl.col(FEATURE_TIME).dt.epoch("us")).iter_rows()
    }
    # the stale partitions (3..5: they reach back a day, an hour and a granule before the
    # rewritten entities' newest rows), then the rows before those (the lookup's batches)
    assert second.mode == "incremental" and second.partitions_read == 3
    stale_rows = rows.filter(pl.col(DAY) >= days[3]).height
    old_rows = delta.read(TABLE, version=v1).filter(pl.col(DAY) >= days[3]).height
    assert stale_rows + old_rows <= second.rows_read < stale_rows + old_rows + rows.height / 2
    assert second.entities_written == _changed_entities(delta, v1, v2)
    assert 0 < second.entities_written < rows[ENTITY_KEY].n_unique() / 2
    assert second.entities_looked_up == 0

    # a card's rows vanish from the last two days (e.g. its events were corrected away): its
    # newest row is now an older one, looked up in the earlier partitions
    recent = rows.filter(pl.col(DAY) >= days[4])
    card = recent[ENTITY_KEY][0]
    v3 = _write(delta, rows.filter(pl.col(ENTITY_KEY) != card), days[4], days[-1])
    third = snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)
    _full_snapshot(full, delta, v3)
    assert _dump(incremental) == _dump(full)
    assert (third.mode, third.entities_looked_up, third.entities_written) == ("incremental", 1, 1)


def test_full_snapshot_when_asked_or_when_the_checkpoint_does_not_fit(
    tmp_path: Path, stores: tuple[redis.Redis, redis.Redis]
) -> None:
    incremental, _ = stores
    delta = DeltaStore(str(tmp_path / "delta"))
    day = START.date()
    rows = _rows(GROUP, _transactions(4, users=5, n=50, first=START, hours=20))
    _write(delta, rows, day, day)
    snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)

    asked = snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY, full=True)
    assert (asked.mode, asked.rows_read) == ("full", rows.height)

    recreated = DeltaStore(str(tmp_path / "other"))  # same name, another table id
    _write(recreated, rows, day, day)
    again = snapshot_group(incremental, recreated, TABLE, GROUP, partition_column=DAY)
    assert (again.mode, again.reason) == ("full", "the offline table was recreated")

    incremental.flushdb()  # the store lost its content, and the checkpoint with it
    flushed = snapshot_group(incremental, recreated, TABLE, GROUP, partition_column=DAY)
    assert (flushed.mode, flushed.entities_written) == ("full", rows[ENTITY_KEY].n_unique())

    # the version the checkpoint names lost its files to a VACUUM: a full snapshot
    later = _rows(GROUP, _transactions(5, users=5, n=60, first=START, hours=20))
    _write(recreated, later, day, day)
    recreated.open(TABLE).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    vacuumed = snapshot_group(incremental, recreated, TABLE, GROUP, partition_column=DAY)
    assert vacuumed.mode == "full" and "no longer readable" in vacuumed.reason
    assert vacuumed.rows_read == later.height

    incremental.hset(checkpoint_key(), GROUP.versioned_name, b"not json")
    with pytest.raises(ValueError, match="is not a checkpoint"):
        snapshot_group(incremental, recreated, TABLE, GROUP, partition_column=DAY)


def test_an_entity_gone_from_the_stale_partitions_is_found_however_far_back(
    tmp_path: Path, stores: tuple[redis.Redis, redis.Redis]
) -> None:
    """The lookup reads the earlier partitions newest first, a batch at a time: a card last seen
    in the first batch and one last seen only in an older batch both get their newest row."""
    incremental, full = stores
    delta = DeltaStore(str(tmp_path / "delta"))
    first = START - timedelta(days=7)  # 13 days: within the keys' TTL + grace on the wall clock
    days = [(first + timedelta(days=d)).date() for d in range(13)]
    noise = _transactions(5, users=20, n=600, first=first, hours=13 * 24 - 1)

    def card_on(card: str, day: int, seed: int) -> pl.DataFrame:
        one = _transactions(seed, users=1, n=1, first=first + timedelta(days=day, hours=9), hours=1)
        return one.with_columns(
            pl.lit(card.split("-")[0]).alias("user_id"), pl.lit(card).alias("card_id")
        )

    # card "old": days 1 and 12 (found in the second batch); card "recent": days 8 and 12 (first)
    special = [card_on("old-c", 1, 6), card_on("old-c", 12, 7)]
    special += [card_on("recent-c", 8, 8), card_on("recent-c", 12, 9)]
    rows = _rows(GROUP, pl.concat([noise, *special]).sort("event_time"))
    v1 = _write(delta, rows, days[0], days[-1])
    snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)
    _full_snapshot(full, delta, v1)

    gone = rows.filter(pl.col(DAY) == days[-1], pl.col("card_id").is_in(["old-c", "recent-c"]))
    assert gone.height == 2
    v2 = _write(delta, rows.join(gone, on=rows.columns, how="anti"), days[-1], days[-1])
    done = snapshot_group(incremental, delta, TABLE, GROUP, partition_column=DAY)
    _full_snapshot(full, delta, v2)
    assert v2 > v1 and _dump(incremental) == _dump(full)
    assert (done.mode, done.entities_looked_up, done.entities_written) == ("incremental", 2, 2)
