"""Dagster's own storage: SQLite under the data directory, or PostgreSQL when configured."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from fraud_platform.settings import Settings


def dagster_yaml(settings: Settings) -> dict:
    config: dict = {
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "DefaultRunCoordinator",
        },
        "telemetry": {"enabled": False},
    }
    if settings.dagster_postgres_url:
        # the URL (with any password) stays in the environment, never in the file
        config["storage"] = {"postgres": {"postgres_url": {"env": "FRAUD_PLATFORM_DAGSTER_PG_URL"}}}
    return config


def prepare_dagster_home(settings: Settings) -> Path:
    """Write ``dagster.yaml`` into DAGSTER_HOME and point this process (and its children) at it."""
    home = settings.dagster_home_dir
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(settings), sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(home)
    return home
