"""Dagster's SQLite storage with pooled connections (the local instance; production uses
PostgreSQL, ``tools/instance.py``).

Dagster's SQLite storages open a new SQLAlchemy engine and connection for every operation
(``NullPool``) and dispose of it after: storing one materialization event opens three, and a
one-hour micro-batch opens ~2,000. Measured on the refresh benchmark's 30- and 180-day
instances (``SqliteEventLogStorage.store_event`` of a partitioned materialization, 150 events):
7.3-8.8 ms per event as shipped, 1.9-2.4 ms with one pooled engine per database; the SQL itself
is ~0.4 ms per statement-run of the micro-batch. These classes keep Dagster's databases, layout
and transactions (one transaction per operation, under the storage's own lock) and only reuse
connections: the index database's engine for the life of the process, the most recent runs'
databases in a small LRU.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine

# Dagster's busy timeout for its SQLite databases (several processes write them: the daemon,
# the UI, run workers)
BUSY_TIMEOUT_S = 30
# run databases kept open per process: a run's steps write their own run's database
RUN_ENGINES = 8


def _pooled_engine(conn_string: str) -> Engine:
    # one connection per engine is enough: the storages use a connection under a lock
    return create_engine(
        conn_string,
        pool_size=1,
        max_overflow=4,
        connect_args={"timeout": BUSY_TIMEOUT_S},
    )


class _Engines:
    """Engines by database, the index kept, the others least recently used first out; dropped
    (not closed: the parent owns those connections) in a forked child."""

    def __init__(self, keep: str) -> None:
        self._keep = keep
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self, name: str, conn_string: str) -> tuple[Engine, bool]:
        """The engine of ``name``, and whether it was created now."""
        with self._lock:
            if os.getpid() != self._pid:
                for engine in self._engines.values():
                    engine.dispose(close=False)
                self._engines.clear()
                self._pid = os.getpid()
            engine = self._engines.get(name)
            if engine is not None:
                self._engines.move_to_end(name)
                return engine, False
            engine = _pooled_engine(conn_string)
            self._engines[name] = engine
            runs = [key for key in self._engines if key != self._keep]
            for old in runs[: max(0, len(runs) - RUN_ENGINES)]:
                self._engines.pop(old).dispose()
            return engine, True

    def dispose(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines = _Engines(keep=INDEX_SHARD_NAME)
        super().__init__(base_dir, inst_data)

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledSqliteEventLogStorage:
        return cls(inst_data=inst_data, **config_value)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine, created = self._engines.get(shard, self.conn_string_for_shard(shard))
            if created and shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def wipe(self) -> None:
        # the run databases are deleted: no connection may stay open on them
        self._engines.dispose()
        super().wipe()

    def dispose(self) -> None:
        self._engines.dispose()
        super().dispose()


class PooledSqliteRunStorage(SqliteRunStorage):
    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines = _Engines(keep="runs")
        super().__init__(conn_string, inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        engine, _ = self._engines.get("runs", self._conn_string)
        with engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        self._engines.dispose()
        super().dispose()


class PooledSqliteStorage(DagsterSqliteStorage):
    """``storage: custom:`` in dagster.yaml: Dagster's SQLite layout under ``base_dir``."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.base_dir = base_dir
        self._run_storage = PooledSqliteRunStorage.from_local(os.path.join(base_dir, "history", ""))
        self._event_log_storage = PooledSqliteEventLogStorage(
            os.path.join(base_dir, "history", "runs", "")
        )
        self._schedule_storage = SqliteScheduleStorage.from_local(
            os.path.join(base_dir, "schedules")
        )
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(  # type: ignore[override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> PooledSqliteStorage:
        return cls(inst_data=inst_data, **config_value)
