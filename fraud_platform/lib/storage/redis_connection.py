"""Building a Redis client from ``REDIS_URL`` (``redis://``, ``rediss://`` for TLS, ``unix://``,
``redis+cluster://``/``rediss+cluster://`` for a Redis Cluster: ``lib/features/online/client.py``)
and the optional CA file that signed the server's certificate; and a ping whose errors say
what to fix (TLS, password) without printing the password."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis

from fraud_platform.lib.features.online.client import redis_client
from fraud_platform.settings import redact_url


class RedisConnectionError(ConnectionError):
    """Redis refused or dropped the connection; the message names the cause and the URL
    without its password."""


def connect(url: str, *, ca_cert: str | None = None, **options: Any) -> redis.Redis:
    """A client for ``url``; over ``rediss://`` the server's certificate is verified against
    ``ca_cert`` (a PEM file) when given, else against the system's CAs."""
    if ca_cert:
        if urlsplit(url).scheme not in ("rediss", "rediss+cluster"):
            raise RedisConnectionError(
                f"a Redis CA certificate ({ca_cert}) is set but REDIS_URL={redact_url(url)} "
                "is not a rediss:// (TLS) URL"
            )
        options["ssl_ca_certs"] = ca_cert
    return redis_client(url, **options)


def unlink_matching(client: redis.Redis, pattern: str, batch: int = 5_000) -> int:
    """UNLINK the keys matching ``pattern`` (``SCAN``, one ``UNLINK`` per ``batch`` keys);
    returns how many there were."""
    removed = 0
    keys: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=10_000):
        keys.append(key)
        if len(keys) >= batch:
            removed += int(client.unlink(*keys))
            keys = []
    if keys:
        removed += int(client.unlink(*keys))
    return removed


def ping(client: redis.Redis, url: str) -> None:
    """``PING`` the server; raise ``RedisConnectionError`` with the likely cause."""
    shown = redact_url(url)
    no_password = urlsplit(url).password is None
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        if no_password:
            raise RedisConnectionError(
                f"Redis at {shown} requires a password: put it in REDIS_URL "
                f"(rediss://:PASSWORD@host:port/0): {exc}"
            ) from exc
        raise RedisConnectionError(
            f"Redis at {shown} refused the credentials (check the password in REDIS_URL): {exc}"
        ) from exc
    except redis.ResponseError as exc:
        if "NOAUTH" in str(exc):
            raise RedisConnectionError(
                f"Redis at {shown} requires a password: put it in REDIS_URL "
                "(rediss://:PASSWORD@host:port/0)"
            ) from exc
        raise
    except redis.ConnectionError as exc:
        hint = ""
        if urlsplit(url).scheme == "redis":
            hint = " (a TLS-only server drops plain-text connections: use rediss://)"
        elif "certificate" in str(exc).lower():
            hint = (
                " (set FRAUD_PLATFORM_REDIS_CA_CERT to the CA that signed the server's certificate)"
            )
        raise RedisConnectionError(f"Redis at {shown} is not reachable{hint}: {exc}") from exc
