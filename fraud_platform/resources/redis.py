"""The online store's Redis."""

from __future__ import annotations

import dagster as dg
import redis

from fraud_platform.lib.features.online.client import redis_client


class RedisResource(dg.ConfigurableResource):
    """A Redis server, e.g. ``redis://127.0.0.1:6379/0``, or a Redis Cluster through one of its
    nodes, ``redis+cluster://10.0.0.5:6379`` (``lib/features/online/client.py``)."""

    url: str
    socket_timeout_s: float = 5.0

    def client(self) -> redis.Redis:
        return redis_client(
            self.url,
            socket_timeout=self.socket_timeout_s,
            socket_connect_timeout=self.socket_timeout_s,
        )

    def check(self) -> None:
        try:
            self.client().ping()
        except redis.RedisError as exc:
            raise ConnectionError(f"Redis not reachable at {self.url}: {exc}") from exc
