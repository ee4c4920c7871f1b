"""What an earlier demo run left: the platform's keys in Redis cleared, a data directory started
over (real Redis, database 11)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fraud_platform.settings import Settings
from fraud_platform.tools.demo_state import NotADataDirectory, clear_platform_keys, start_over
from tests.redis_server import redis_db_url

REDIS_DB_URL = redis_db_url(11)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_DB_URL)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


def _settings(data_dir: Path) -> Settings:
    return Settings.from_env({"FRAUD_PLATFORM_DATA_DIR": str(data_dir), "REDIS_URL": REDIS_DB_URL})


def _platform_and_other_keys(client: redis.Redis) -> None:
    for i in range(7_000):  # more than one UNLINK batch
        client.set(f"fp:5:user_txn_velocity:v2:{{user:u{i}}}", b"row")
    client.set("fp:5:snapshot_checkpoint", b"x")
    client.hset("fps:2:{transactions:user:u1}", "v", 1)
    client.hset("fps:heartbeat:fraud-platform-features", "events", 3)
    client.set("scores:other", b"kept")
    client.set("fpx", b"kept")  # not a platform prefix


def test_clear_platform_keys_removes_the_online_rows_and_stores_only(
    client: redis.Redis, tmp_path: Path
) -> None:
    _platform_and_other_keys(client)
    assert clear_platform_keys(_settings(tmp_path)) == 7_003
    assert sorted(client.keys("*")) == [b"fpx", b"scores:other"]
    assert clear_platform_keys(_settings(tmp_path)) == 0


def test_start_over_deletes_the_data_directory_and_the_keys(
    client: redis.Redis, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "delta" / "bronze").mkdir(parents=True)
    (data_dir / "published_holdout.json").write_text("{}")
    _platform_and_other_keys(client)
    said: list[str] = []
    start_over(_settings(data_dir), said.append)
    assert not data_dir.exists()
    assert sorted(client.keys("*")) == [b"fpx", b"scores:other"]
    assert "7,003 platform keys removed" in said[0]


def test_start_over_leaves_a_directory_that_is_not_a_data_directory(
    client: redis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    client.set("fp:5:snapshot_checkpoint", b"x")
    with pytest.raises(
        NotADataDirectory, match="does not look like a fraud-platform data directory"
    ):
        start_over(_settings(tmp_path), print)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert client.exists("fp:5:snapshot_checkpoint")  # nothing done at all
