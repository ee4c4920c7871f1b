"""The one Definitions object: everything under ``defs/`` is loaded, nothing is wired by hand."""

import sqlite3
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import event
from sqlalchemy.engine import Engine

# Dagster's default (SQLite) instance stores every event of a run (a step's start, output and
# success; each partition's planned and done materialization; every log record) in its own
# transaction on a new connection, mirrored into the asset index: five or so connections and
# three commits per event. SQLite's default ``synchronous=FULL`` flushes the WAL to disk at
# every commit: 1/5 of a feature refresh's wall time on this machine (README, refresh
# scaling). ``NORMAL`` is SQLite's recommended setting in WAL mode (every Dagster database is
# in WAL mode): the database stays consistent after a crash, and a power loss can lose the
# last commits (the newest events of a run) but nothing older. Only this process's SQLite
# connections (the code location's runs, the in-process CLI and demo runs); PostgreSQL storage
# (FRAUD_PLATFORM_DAGSTER_PG_URL, production) is untouched.
SQLITE_SYNCHRONOUS = "NORMAL"


@event.listens_for(Engine, "connect")
def _sqlite_synchronous(connection: Any, _record: Any) -> None:
    if isinstance(connection, sqlite3.Connection):
        connection.execute(f"pragma synchronous = {SQLITE_SYNCHRONOUS}")


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent)
