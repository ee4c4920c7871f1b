"""The online store's Redis."""

from __future__ import annotations

import dagster as dg
import redis


class RedisResource(dg.ConfigurableResource):
    """A Redis server or cluster endpoint, e.g. ``redis://127.0.0.1:6379/0``."""

    url: str
    socket_timeout_s: float = 5.0

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout_s,
            socket_connect_timeout=self.socket_timeout_s,
        )

    def check(self) -> None:
        try:
            self.client().ping()
        except redis.RedisError as exc:
            raise ConnectionError(f"Redis not reachable at {self.url}: {exc}") from exc
