"""What an earlier demo run left behind, and starting over.

The demo writes the platform's keys in the Redis it is given: online rows and the snapshot
checkpoint (``fp:``), the stream's entity stores, heartbeat and applied offsets (``fps:``).
A run in a new data directory against a Redis still holding an earlier run's keys (a fresh
clone, the default Redis) served 740 of 2,000 answers degraded and an online AP of 0.47: the
earlier replay had moved every key past the held-out period, the keep rule had dropped the rows
its lookups read, and the stream's stores already held the replayed events, so nothing was
rewritten. So a new run starts from an online store without them (``clear_platform_keys``).

A held-out period replayed by an earlier run in the same data directory cannot be scored again
for the same reason; ``fraud-platform demo --fresh`` starts over (``start_over``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from fraud_platform.settings import Settings, redact_url

PLATFORM_KEY_PATTERNS = ("fp:*", "fps:*")
# the replay_mode of a run whose held-out period an earlier run in its data directory replayed
ALREADY_REPLAYED = "already replayed (the figures of the run that replayed it)"
# a directory holding one of these is a platform data directory ``start_over`` may delete
DATA_DIR_MARKERS = ("published_simulation.json", "dagster_home", "services", "delta")


def clear_platform_keys(settings: Settings) -> int:
    """UNLINK the platform's keys (online rows, checkpoints, the stream's stores) in the
    settings' Redis database; returns how many there were."""
    from fraud_platform.lib.storage.redis_connection import connect, unlink_matching

    client = connect(settings.redis_url, ca_cert=settings.redis_ca_cert, socket_timeout=30)
    try:
        return sum(unlink_matching(client, pattern) for pattern in PLATFORM_KEY_PATTERNS)
    finally:
        client.close()


class NotADataDirectory(ValueError):
    """``start_over`` was pointed at a directory it will not delete."""


def is_platform_data_dir(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in DATA_DIR_MARKERS)


def start_over(settings: Settings, say: Callable[[str], None] = print) -> None:
    """Remove the platform's keys from Redis, stop the services this data directory started
    and delete it. Raises ``NotADataDirectory`` for a directory that does not look like a platform
    data directory (nothing is deleted)."""
    from fraud_platform.tools.services import services_down

    data_dir = settings.data_dir
    if data_dir.exists() and (
        not is_platform_data_dir(data_dir) or data_dir in (Path("/"), Path.home())
    ):
        raise NotADataDirectory(
            f"{data_dir} does not look like a fraud-platform data directory (none of "
            f"{', '.join(DATA_DIR_MARKERS)}): not deleting it"
        )
    try:  # first: services_down may stop the Redis holding them (a private one)
        removed = clear_platform_keys(settings)
    except Exception as exc:  # noqa: BLE001 - not running: nothing of it to remove
        say(f"starting over: {redact_url(settings.redis_url)} not reachable ({exc})")
    else:
        say(
            f"starting over: {removed:,} platform keys removed from {redact_url(settings.redis_url)}"
        )
    if data_dir.exists():
        stopped = services_down(settings)
        shutil.rmtree(data_dir)
        say(f"  deleted {data_dir}" + (f" (stopped {', '.join(stopped)})" if stopped else ""))
