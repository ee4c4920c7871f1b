"""The Redis server the tests use: 127.0.0.1:6379, unless ``FRAUD_PLATFORM_TEST_REDIS_SERVER``
names another (``redis://host:port``).

Tests flush their own databases of it, so two test runs on one machine (parallel sessions,
helpers in worktrees) each need a server of their own: start one with
``redis-server --port P --save '' --daemonize yes`` and set the variable to ``redis://127.0.0.1:P``.
The serving and stream tests also take a whole URL (``FRAUD_PLATFORM_TEST_REDIS_URL``,
``STREAM_TEST_REDIS_URL``) that overrides this.
"""

from __future__ import annotations

import os

SERVER = os.environ.get("FRAUD_PLATFORM_TEST_REDIS_SERVER", "redis://127.0.0.1:6379").rstrip("/")


def redis_db_url(db: int) -> str:
    """The URL of database ``db`` of the tests' Redis server."""
    return f"{SERVER}/{db}"
