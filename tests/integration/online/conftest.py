"""A real 3-node Redis Cluster (``redis-server`` in cluster mode, no replicas) on free ports.

Started once per session; the servers are stopped at the end. Tests use unique key prefixes
or entity ids like everywhere else, although the cluster is private to this session.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fraud_platform.lib.features.online.client import redis_client

NODES = 3
CLUSTER_BUS_OFFSET = 10000  # Redis listens on port + 10000 for the cluster bus


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_ports(count: int) -> list[int]:
    """Ports P with P and P + 10000 (its cluster bus) free."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + CLUSTER_BUS_OFFSET < 65536 and port not in ports:
            if _port_free(port + CLUSTER_BUS_OFFSET):
                ports.append(port)
    return ports


def _wait(predicate, timeout_s: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"Redis Cluster: {what} within {timeout_s} s")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis+cluster://127.0.0.1:P`` of a running 3-node cluster (``cluster_state:ok``)."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail("redis-server and redis-cli are needed for the Redis Cluster tests")
    folder: Path = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports(NODES)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = folder / str(port)
            node_dir.mkdir()
            log = (node_dir / "redis.log").open("wb")
            processes.append(
                subprocess.Popen(
                    [
                        server,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(node_dir / "nodes.conf"),
                        "--dir",
                        str(node_dir),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port in ports:
            node = redis.Redis(port=port)
            _wait(node.ping, 10, f"node {port} did not answer")
            node.close()
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in ports:
            node = redis.Redis(port=port, decode_responses=True)
            _wait(
                lambda n=node: n.cluster("info")["cluster_state"] == "ok",
                30,
                f"node {port} did not reach cluster_state:ok",
            )
            node.close()
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def cluster_client(redis_cluster_url: str) -> Iterator[redis.Redis]:
    client = redis_client(redis_cluster_url, socket_timeout=10)
    yield client
    client.close()
