"""The online writer's compare-on-write script against a model of its rules, on a real Redis.

Random calls mix the stream's usual call (every row newer than the key's rows) with late,
replayed and same-feature_time rows (frames without a ``retain`` column: a group without
at-lookup windows), across the history horizon's boundary (counted from the newest row's minute) to the microsecond
(main's script rounded the boundary to 100 us: Lua's tostring of a 16-digit time). After every call each key holds exactly the
model's rows and expiry, and the script reports the model's count of stored rows. A call's
expiry is, as ``layout.encode_rows`` makes it, a function of the hour of its newest row, so a
key expires a fixed time after the end of its newest row's hour.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import polars as pl
import pytest
import redis

from fraud_platform.lib.features.online.layout import (
    EXPIRY_GRANULE_MS,
    HISTORY_GRANULE,
    HISTORY_HORIZON,
    HISTORY_MIN_ROWS,
)
from fraud_platform.lib.features.online.writer import write_encoded
from tests.redis_server import redis_db_url

pytestmark = pytest.mark.integration

HORIZON_US = HISTORY_HORIZON // HISTORY_HORIZON.resolution
GRANULE_US = HISTORY_GRANULE // HISTORY_GRANULE.resolution
T0 = 1_750_000_000_123_456  # a 16-digit microsecond time: Lua's '%.14g' would round it
FAR_MS = 4_000_000_000_000  # expiries far in the future: nothing expires during the test


def _expiry(score_us: int) -> int:
    return (score_us // 1000 // EXPIRY_GRANULE_MS + 1) * EXPIRY_GRANULE_MS + FAR_MS


Rows = dict[int, tuple[int, str]]  # score -> (writer_version, member)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_db_url(0), socket_timeout=5)
    client.ping()
    yield client
    client.close()


def _member(score: int, version: int, tag: int) -> str:
    return f"[{score},{tag},{version}]"


def _model_write(stored: Rows, rows: list[tuple[int, int, str]]) -> int:
    """The script's rules for one key's rows of one call: a row replaces the row of its
    feature_time unless that one has a higher version; then the history is trimmed."""
    wins = 0
    for score, version, member in rows:
        old = stored.get(score)
        if old is None or old[0] <= version:
            stored[score] = (version, member)
            wins += 1
    if wins:  # history.py's rule without windows: the row before each t >= N - H, min rows
        times = sorted(stored)
        start = _start(times[-1])
        for i, score in enumerate(times[:-HISTORY_MIN_ROWS]):
            if times[i + 1] < start:
                del stored[score]
    return wins


def _start(newest: int) -> int:
    """N - H: the horizon counts back from the newest row's time rounded down to the granule."""
    return newest - newest % GRANULE_US - HORIZON_US


def _random_rows(rng: random.Random, stored: Rows, tag: int) -> list[tuple[int, int, str]]:
    newest = max(stored, default=T0)
    count = rng.choice([1, 1, 2, 3, 7])
    kind = rng.random()
    if kind < 0.5 or not stored:  # newer rows (the stream's usual call), sometimes far ahead
        step = rng.choice([1, 1_000, GRANULE_US, HORIZON_US // 3, HORIZON_US, HORIZON_US + 1])
        scores = [newest + step * (i + 1) for i in range(count)]
        rng.shuffle(scores)
    elif kind < 0.8:  # late rows, at or around stored feature_times
        scores = [rng.choice([*stored, _start(newest), newest + 1]) for _ in range(count)]
    else:  # newer rows, two of them at the same feature_time
        scores = [newest + 5, newest + 5, *(newest + 6 + i for i in range(count))]
    return [(s, (v := rng.randint(0, 4)), _member(s, v, tag)) for s in scores]


def test_write_script_keeps_the_model_rows_and_expiry(client: redis.Redis) -> None:
    rng = random.Random(12)
    prefix = f"wst-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}:{{k{i}}}" for i in range(4)]
    model: dict[str, Rows] = {key: {} for key in keys}
    try:
        for tag in range(300):
            frames = []
            expected = 0
            for key in rng.sample(keys, rng.randint(1, len(keys))):
                rows = _random_rows(rng, model[key], tag)
                pxat = _expiry(max(r[0] for r in rows))
                expected += _model_write(model[key], rows)
                frames.append(
                    pl.DataFrame(
                        {
                            "key": [key] * len(rows),
                            "score": [r[0] for r in rows],
                            "version": [r[1] for r in rows],
                            "value": [r[2] for r in rows],
                            "pxat": [pxat] * len(rows),
                        }
                    )
                )
            assert write_encoded(client, pl.concat(frames)) == expected, tag
            for key in keys:
                held = client.zrange(key, 0, -1, withscores=True)
                assert [(m.decode(), int(s)) for m, s in held] == [
                    (member, score) for score, (_, member) in sorted(model[key].items())
                ], (tag, key)
                if model[key]:
                    want = _expiry(max(model[key]))
                    assert client.execute_command("PEXPIRETIME", key) == want, (tag, key)
    finally:
        client.delete(*keys)
