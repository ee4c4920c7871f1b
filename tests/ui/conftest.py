"""A real ``dagster dev`` on a free port, with its own data directory and DAGSTER_HOME.

Started once per test module. ``dagster dev`` spawns a code server, a gRPC server, the webserver
and the daemon; they do not all exit on SIGTERM, so teardown signals the whole process group
(the process is started in a new session), escalates to SIGKILL, and checks the port is free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fraud_platform.settings import Settings
from fraud_platform.tools.instance import prepare_dagster_home
from fraud_platform.tools.pipeline import (
    dagster_dev_command,
    env_with_venv_on_path,
    prepare_dbt_manifest,
)
from fraud_platform.tools.processes import spawn_logged

REPO_ROOT = Path(__file__).resolve().parents[2]
LOAD_DEADLINE_S = 120.0
STOP_GRACE_S = 10.0
LOCATION_QUERY = """
{ workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message }
} }
"""


@dataclass(frozen=True)
class DagsterDev:
    url: str
    tmp_dir: Path
    log_path: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen, port: int) -> None:
    """SIGTERM the whole group, SIGKILL whatever is left after a grace period."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        process.poll()  # reap the leader so a zombie does not keep the group "alive"
        if not _group_alive(pgid):
            break
        time.sleep(0.25)
    else:
        # dagster's code server, gRPC server and webserver can outlive SIGTERM for a long time;
        # the group may also have ended since the last look
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while (_group_alive(pgid) or not port_is_free(port)) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not _group_alive(pgid), f"processes of group {pgid} still running"
    assert port_is_free(port), f"port {port} still answers after stopping dagster dev"


def wait_until_loaded(dev: DagsterDev, process: subprocess.Popen) -> None:
    """Poll the GraphQL endpoint until the code location is LOADED (fail fast if it died)."""
    deadline = time.monotonic() + LOAD_DEADLINE_S
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"dagster dev exited with {process.returncode} before loading\n{dev.log_tail()}"
            )
        try:
            data = dev.graphql(LOCATION_QUERY)["workspaceOrError"]
        except (httpx.HTTPError, ValueError) as exc:
            last = repr(exc)
        else:
            entries = data.get("locationEntries") or []
            last = repr(data)
            errors = [
                e
                for e in entries
                if (e.get("locationOrLoadError") or {}).get("__typename") == "PythonError"
            ]
            if errors:
                pytest.fail(f"code location failed to load: {errors}\n{dev.log_tail()}")
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                return
        time.sleep(1)
    pytest.fail(
        f"code location not loaded after {LOAD_DEADLINE_S:.0f}s (last: {last})\n{dev.log_tail()}"
    )


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    tmp_dir = tmp_path_factory.mktemp("dagster_ui")
    data_dir = tmp_dir / "data"
    port = free_port()
    log_path = tmp_dir / "dagster_dev.log"
    with pytest.MonkeyPatch.context() as mp:
        # prepare_dagster_home sets os.environ["DAGSTER_HOME"]: undone when the module ends
        mp.setenv("FRAUD_PLATFORM_DATA_DIR", str(data_dir))
        mp.setenv("DAGSTER_HOME", str(data_dir / "dagster_home"))
        mp.delenv("FRAUD_PLATFORM_DAGSTER_PG_URL", raising=False)  # this instance: SQLite
        home = prepare_dagster_home(Settings.from_env())
        # the "Join the Dagster community" modal is shown once per DAGSTER_HOME; its click
        # handler could time out under CI load, so mark it as seen (what "Skip" writes)
        (home / ".nux").mkdir(parents=True, exist_ok=True)
        (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
        prepare_dbt_manifest()
        env = dict(os.environ)
    env = env_with_venv_on_path(env)
    env["PYTHONUNBUFFERED"] = "1"
    dev = DagsterDev(url=f"http://127.0.0.1:{port}", tmp_dir=tmp_dir, log_path=log_path)
    process = spawn_logged(
        dagster_dev_command(port), log_path, cwd=REPO_ROOT, env=env, append=False
    )
    try:
        wait_until_loaded(dev, process)
        yield dev
    finally:
        stop_process_group(process, port)
