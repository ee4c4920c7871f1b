"""Dagster's own storage: SQLite under the data directory, or PostgreSQL when configured."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from fraud_platform import names
from fraud_platform.settings import Settings

PG_URL_VARIABLE = "FRAUD_PLATFORM_DAGSTER_PG_URL"
MAX_CONCURRENT_RUNS = 4


def dagster_yaml(settings: Settings) -> dict:
    config: dict = {
        # Sensor and UI runs wait in a queue: at most MAX_CONCURRENT_RUNS at once, and one at a
        # time per value of RUN_QUEUE_TAG (ingestion, feature refresh), so a burst of arrivals
        # cannot start runs that fight for 2 cores and the same Delta tables. The queue is read
        # every second and runs are launched from threads: launching one waits until its run
        # worker has imported the code location.
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                "max_concurrent_runs": MAX_CONCURRENT_RUNS,
                "tag_concurrency_limits": [
                    {
                        "key": names.RUN_QUEUE_TAG,
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": 1,
                    }
                ],
                "dequeue_interval_seconds": 1,
                "dequeue_use_threads": True,
                "dequeue_num_workers": 2,
            },
        },
        # each sensor in its own thread: a slow one does not delay the arrivals sensor
        "sensors": {"use_threads": True, "num_workers": 4},
        "telemetry": {"enabled": False},
    }
    if settings.dagster_postgres_url:
        # the URL (with any password) stays in the environment, never in the file
        config["storage"] = {"postgres": {"postgres_url": {"env": PG_URL_VARIABLE}}}
    else:
        # Dagster's own SQLite layout under DAGSTER_HOME, with connections reused instead of
        # opened per operation (tools/dagster_sqlite.py says what that saves)
        config["storage"] = {
            "custom": {
                "module": "fraud_platform.tools.dagster_sqlite",
                "class": "PooledSqliteStorage",
                "config": {"base_dir": {"env": "DAGSTER_HOME"}},
            }
        }
    return config


def prepare_dagster_home(settings: Settings) -> Path:
    """Write ``dagster.yaml`` into DAGSTER_HOME and point this process (and its children) at it."""
    home = settings.dagster_home_dir
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(settings), sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(home)
    if settings.dagster_postgres_url:
        os.environ[PG_URL_VARIABLE] = sqlalchemy_postgres_url(settings.dagster_postgres_url)
    return home


def sqlalchemy_postgres_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` with the psycopg2 driver named explicitly: SQLAlchemy
    2.1 maps a bare ``postgresql://`` to psycopg 3, which is not installed (psycopg2 is)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url
