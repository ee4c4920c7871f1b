"""The online store's Redis."""

from __future__ import annotations

import dagster as dg
import redis

from fraud_platform.lib.storage.redis_connection import connect, ping


class RedisResource(dg.ConfigurableResource):
    """A Redis server or cluster endpoint, e.g. ``redis://127.0.0.1:6379/0`` or
    ``rediss://:PASSWORD@host:6380/0`` with ``ca_cert`` (a PEM file) for TLS. A URL carrying a
    password is given as ``dg.EnvVar("REDIS_URL")`` so the UI shows the variable, not the value."""

    url: str
    ca_cert: str | None = None
    socket_timeout_s: float = 5.0

    def client(self) -> redis.Redis:
        return connect(
            self.url,
            ca_cert=self.ca_cert,
            socket_timeout=self.socket_timeout_s,
            socket_connect_timeout=self.socket_timeout_s,
        )

    def check(self) -> None:
        ping(self.client(), self.url)
