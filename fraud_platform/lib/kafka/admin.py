"""Kafka admin helpers that speak only the Kafka protocol, so they work the same against the
embedded broker and a production cluster."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)

DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000


class KafkaUnavailable(RuntimeError):
    """No Kafka-protocol broker answers at the given bootstrap address."""


def admin_config(bootstrap: str, timeout_s: float = 5) -> dict[str, Any]:
    """Client settings that fail fast and send librdkafka's logs to Python logging."""
    timeout_ms = max(int(timeout_s * 1000), 1000)
    return {
        "bootstrap.servers": bootstrap,
        "socket.timeout.ms": timeout_ms,
        "socket.connection.setup.timeout.ms": timeout_ms,
        "reconnect.backoff.max.ms": 1000,
        "logger": logging.getLogger("fraud_platform.librdkafka"),
    }


def _tcp_error(bootstrap: str, timeout_s: float) -> str | None:
    """None if some bootstrap address accepts a TCP connection, else the last error."""
    error = "no address"
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return None
        except (OSError, ValueError) as exc:
            error = f"{address.strip()}: {exc}"
    return error


def check_kafka(bootstrap: str, timeout_s: float = 5) -> None:
    """Raise ``KafkaUnavailable`` unless a broker answers a metadata request within ``timeout_s``.

    A refused TCP connection fails at once; otherwise the metadata request is bounded by
    ``timeout_s``.
    """
    tcp_error = _tcp_error(bootstrap, min(timeout_s, 2))
    if tcp_error is not None:
        raise KafkaUnavailable(f"Kafka not reachable at {bootstrap}: {tcp_error}")
    try:
        metadata = AdminClient(admin_config(bootstrap, timeout_s)).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaUnavailable(f"Kafka not reachable at {bootstrap}: {exc.args[0]}") from None
    if not metadata.brokers:
        raise KafkaUnavailable(f"Kafka not reachable at {bootstrap}: no broker in metadata")


def _topic_partitions(topics: Mapping[str, int] | Sequence[str], partitions: int) -> dict[str, int]:
    if isinstance(topics, str):
        return {topics: partitions}
    if isinstance(topics, Mapping):
        return dict(topics)
    return {name: partitions for name in topics}


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Sequence[str],
    *,
    partitions: int = 3,
    retention_ms: int = DEFAULT_RETENTION_MS,
    timeout_s: float = 30,
) -> None:
    """Create the missing topics (with ``retention.ms``) and wait until the broker lists them.

    ``topics`` is either a mapping name -> partition count or names using ``partitions``.
    Existing topics are left as they are.
    """
    wanted = _topic_partitions(topics, partitions)
    admin = AdminClient(admin_config(bootstrap))
    existing = admin.list_topics(timeout=10).topics
    missing = [
        NewTopic(name, count, 1, config={"retention.ms": str(retention_ms)})
        for name, count in wanted.items()
        if name not in existing
    ]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                log.debug("topic %s created concurrently", name)
    _wait_for_topics(admin, wanted, timeout_s)


def _wait_for_topics(admin: AdminClient, wanted: Mapping[str, int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=5).topics
        pending = [
            name
            for name in wanted
            if name not in topics or topics[name].error is not None or not topics[name].partitions
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise KafkaException(f"topics not ready after {timeout_s} s: {pending}")
        time.sleep(0.1)


def delete_records_before(
    bootstrap: str, offsets: Mapping[str, Mapping[int, int]], timeout_s: float = 30
) -> int:
    """DeleteRecords: drop each partition's records before the given offset (``offsets``:
    topic -> partition -> offset); returns the number of partitions trimmed.

    For a broker that keeps what it retains in memory (the embedded one) once a durable copy
    exists (bronze): never on topics other consumers still read. Raises on any refusal.
    """
    from confluent_kafka import TopicPartition

    wanted = [
        TopicPartition(topic, partition, offset)
        for topic, partitions in offsets.items()
        for partition, offset in partitions.items()
        if offset > 0
    ]
    count = len(wanted)  # delete_records empties the list it is given
    if not wanted:
        return 0
    admin = AdminClient(admin_config(bootstrap))
    for future in admin.delete_records(wanted, request_timeout=timeout_s).values():
        future.result()
    return count
