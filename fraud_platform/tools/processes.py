"""Child processes the tooling (and the tests) start: brokers, the scoring service, dagster dev."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn_logged(
    command: Sequence[str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    append: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own (its whole process group can be signalled),
    with no stdin and stdout + stderr going to ``log_path``."""
    with Path(log_path).open("ab" if append else "wb") as log:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
