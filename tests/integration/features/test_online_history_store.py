"""The write script keeps, of every row ever written to a key, exactly ``online_history``.

Random rows of random entities (bursts, gaps up to weeks, equal feature_times) are written on a
real Redis in random batches and orders (late rows older than the key's newest, rows of one
feature_time from two writers), through ``write_rows`` (``_calls``) and through the cluster
call builder (``_cluster_calls``, run on the single server); or first a batch snapshot of
``online_history`` of the entities' earlier rows, then the stream's later and late rows. After
each batch, every key holds exactly the feature_times ``online_history`` keeps of all the rows
written so far (and, in the snapshot case, of all the entities' rows, of which the snapshot
wrote only the kept ones), each the member of the highest writer_version.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.catalog import (
    CARD_VELOCITY,
    USER_DEVICE_HISTORY,
    USER_TXN_VELOCITY_V2,
)
from fraud_platform.lib.features.online.history import online_history
from fraud_platform.lib.features.online.layout import (
    encode_rows,
    from_micros,
    online_key,
    to_micros,
)
from fraud_platform.lib.features.online.scripts import PipelinedScript
from fraud_platform.lib.features.online.writer import (
    WRITE_ROWS_LUA,
    _cluster_calls,
    write_rows,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.windows import stored_group
from tests.redis_server import redis_db_url
from tests.unit.features.test_online_history import DAY, T0
from tests.unit.features.test_online_history import random_times as unit_times

pytestmark = pytest.mark.integration

GROUPS = [USER_TXN_VELOCITY_V2, CARD_VELOCITY, USER_DEVICE_HISTORY]
SHIFT = to_micros(datetime.now(UTC)) - T0 + 61 * DAY  # from yesterday on: no key expires


def random_times(rng: random.Random) -> list[int]:
    return [t + SHIFT for t in unit_times(rng)]


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_db_url(0), socket_timeout=10)
    client.ping()
    yield client
    client.close()


def _rows(group: FeatureGroup, rows: list[tuple[str, int]]) -> pl.DataFrame:
    """Rows of ``group`` with null features (the encoding is not under test)."""
    frame = pl.DataFrame(
        {
            ENTITY_KEY: [k for k, _ in rows],
            FEATURE_TIME: pl.Series(
                [from_micros(t) for _, t in rows], dtype=pl.Datetime("us", "UTC")
            ),
        }
    )
    return frame.with_columns(pl.lit(None).alias(f.name) for f in stored_group(group).features)


def _expected(group: FeatureGroup, rows: list[tuple[str, int]]) -> dict[str, list[int]]:
    kept = online_history(group, _rows(group, rows))
    out: dict[str, list[int]] = {}
    for key, t in kept.select(ENTITY_KEY, pl.col(FEATURE_TIME).dt.epoch("us")).iter_rows():
        if not out.get(key) or out[key][-1] != t:
            out.setdefault(key, []).append(t)
    return out


def _check(
    client: redis.Redis, group: FeatureGroup, expected: dict[str, list[int]], top: dict
) -> None:
    for key, times in expected.items():
        held = client.zrange(online_key(group, key), 0, -1, withscores=True)
        assert [int(s) for _, s in held] == times, key
        for member, score in held:  # the member of the highest version written at that time
            assert member.decode().endswith(f",{top[(key, int(score))]}]"), (key, score)
        assert client.pttl(online_key(group, key)) > 0


def _write(
    client: redis.Redis, group: FeatureGroup, batch: list, version: int, cluster: bool
) -> None:
    rows = _rows(group, batch)
    if cluster:
        encoded = encode_rows(group, rows, version)
        PipelinedScript(client, WRITE_ROWS_LUA).run(_cluster_calls(encoded), 20)
    else:
        write_rows(client, group, rows, version=version, batch_size=rng_batch(len(batch)))


def _delete(client: redis.Redis, prefix: str) -> None:
    if keys := client.keys(f"*{prefix}*"):
        client.delete(*keys)


def rng_batch(n: int) -> int:
    return max(1, n // 3 + 1)  # several encode/write batches per call of write_rows


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
@pytest.mark.parametrize("seed", range(3))
def test_random_writes_keep_online_history(
    client: redis.Redis, group: FeatureGroup, seed: int
) -> None:
    rng = random.Random(seed)
    prefix = f"h{uuid.uuid4().hex[:6]}-"
    pending = [(f"{prefix}{i}", t) for i in range(60) for t in random_times(rng)]
    rng.shuffle(pending)
    # mostly in time order (as a stream writes), with late rows mixed in
    pending.sort(key=lambda r: r[1] + rng.choice([0, 0, 0, -1, 1]) * rng.randrange(0, 10**11))
    written: list[tuple[str, int]] = []
    top: dict[tuple[str, int], int] = {}
    try:
        while pending:
            size = rng.choice([1, 3, 20, 200])
            batch, pending = pending[:size], pending[size:]
            if rng.random() < 0.2 and written:  # rewrite some rows: same times, new versions
                batch += rng.sample(written, min(len(written), 5))
            rng.shuffle(batch)
            version = rng.randint(0, 9)
            _write(client, group, batch, version, cluster=rng.random() < 0.3)
            written += batch
            for row in batch:
                top[row] = max(top.get(row, -1), version)
            _check(client, group, _expected(group, written), top)
    finally:
        _delete(client, prefix)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_snapshot_then_stream(client: redis.Redis, group: FeatureGroup) -> None:
    """The snapshot writes only the kept rows of its rows; the stream's later (and late) rows
    then leave what ``online_history`` keeps of all the rows."""
    rng = random.Random(21)
    prefix = f"s{uuid.uuid4().hex[:6]}-"
    rows = [(f"{prefix}{i}", t) for i in range(80) for t in random_times(rng)]
    rows.sort(key=lambda r: r[1])
    cut = int(len(rows) * 0.7)
    batch, stream = rows[:cut], rows[cut:]
    snapshot = online_history(group, _rows(group, batch))
    top = {
        (k, t): 0
        for k, t in snapshot.select(ENTITY_KEY, pl.col(FEATURE_TIME).dt.epoch("us")).iter_rows()
    }
    try:
        write_rows(client, group, snapshot, version=0)
        _check(client, group, _expected(group, batch), top)
        stream += rng.sample(batch, 30)  # the stream recomputes some rows of the snapshot
        while stream:
            size = rng.choice([1, 2, 3, 50])
            chunk, stream = stream[:size], stream[size:]
            _write(client, group, chunk, 1, cluster=False)
            batch += chunk
            top.update({row: 1 for row in chunk})
            _check(client, group, _expected(group, batch), top)
    finally:
        _delete(client, prefix)
