"""The one place Redis clients are built: a single server or a Redis Cluster, chosen by the URL.

``redis://`` / ``rediss://`` / ``unix://`` give a ``redis.Redis``; ``redis+cluster://host:port``
(``rediss+cluster://`` with TLS) gives a ``redis.cluster.RedisCluster`` that discovers the other
nodes from that seed node. Every process (the Dagster resource, the stream worker, the scoring
service, the service checks) builds its client here, so a deployment switches to a cluster by
changing ``REDIS_URL`` only.

Cluster notes (``cluster.py`` runs the scripts): each online key carries a hash tag (layout.py),
so an entity's keys share one slot; a Lua script call only takes keys of one slot; pipelines are
non-transactional and split per node by redis-py.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster

CLUSTER_SUFFIX = "+cluster"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url: str) -> bool:
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client for ``url``; ``options`` are redis-py connection options (``socket_timeout``,
    ``retry``, ...), the same for a single server and for every node of a cluster.

    Raises ``ValueError`` for a cluster URL that names a database other than 0 (a cluster has
    only database 0).
    """
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        return redis.Redis.from_url(url, **options)
    if parts.path not in ("", "/", "/0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {parts.path!r}")
    plain = parts._replace(scheme=parts.scheme.removesuffix(CLUSTER_SUFFIX)).geturl()
    # RedisCluster quacks like redis.Redis for every command the platform uses
    return RedisCluster.from_url(plain, **options)  # type: ignore[return-value]


def is_cluster(client: Any) -> bool:
    """``client`` (or a pipeline of it) talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)
