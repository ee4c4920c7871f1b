"""``fraud-platform stream``: run one stream worker process (``lib/streaming``) until stopped.

Also ``python -m fraud_platform.tools.stream_worker`` with explicit connection options (the
tests and the benchmark start workers on their own broker, topics and key prefix).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from fraud_platform.lib.contracts.events import ALL_TOPICS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.kafka import admin as kafka_admin
from fraud_platform.lib.storage.redis_connection import connect, ping
from fraud_platform.lib.streaming.app import (
    CONSUMER_GROUP,
    DEFAULT_APPLY_INTERVAL_S,
    DEFAULT_COMMIT_INTERVAL_S,
    build_application,
    run_worker,
)
from fraud_platform.lib.streaming.processor import StreamProcessor
from fraud_platform.settings import Settings


def run(
    bootstrap: str,
    redis_url: str,
    state_dir: Path,
    *,
    topic_names: dict[str, str] | None = None,
    consumer_group: str = CONSUMER_GROUP,
    store_prefix: str = "",
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    apply_interval_s: float = DEFAULT_APPLY_INTERVAL_S,
    redis_ca_cert: str | None = None,
) -> None:
    client = connect(redis_url, ca_cert=redis_ca_cert, socket_timeout=30)
    ping(client, redis_url)
    processor = StreamProcessor(client, FEATURE_GROUPS, store_prefix=store_prefix)
    app, sink = build_application(
        bootstrap,
        processor,
        topic_names=topic_names,
        consumer_group=consumer_group,
        state_dir=state_dir,
        commit_interval_s=commit_interval_s,
        apply_interval_s=apply_interval_s,
    )
    groups = [g.versioned_name for s in processor.plan for g in s.groups]
    logging.getLogger(__name__).info("stream worker maintaining %s", ", ".join(groups))
    # A checkpoint allocates a few objects per event and column (records, payloads, Redis
    # arguments), few of them in cycles: with the default thresholds the cyclic collector ran
    # 1,062 times (1.7 s) in an in-process run of 20,000 events, 5 times (0.07 s) with these.
    # Collect rarely and never rescan the start-up objects.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    run_worker(app, sink)


def ensure_platform_topics(bootstrap: str) -> None:
    """The topics, as ``fraud-platform simulate`` creates them (the worker never auto-creates)."""
    kafka_admin.ensure_topics(bootstrap, list(ALL_TOPICS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream_worker", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    # a URL with a password on the command line is visible to every user of the machine: the
    # default is REDIS_URL / FRAUD_PLATFORM_REDIS_CA_CERT from the environment
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--redis-ca-cert", default=None)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--group", default=CONSUMER_GROUP)
    parser.add_argument("--store-prefix", default="")
    parser.add_argument("--commit-interval", type=float, default=DEFAULT_COMMIT_INTERVAL_S)
    parser.add_argument(
        "--apply-interval",
        type=float,
        default=DEFAULT_APPLY_INTERVAL_S,
        help="least seconds between the starts of two applications of the arrived events",
    )
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="CONTRACT=NAME",
        help="name of a contract topic on this broker (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    names = dict(item.split("=", 1) for item in args.topic)
    settings = Settings.from_env()
    run(
        args.bootstrap,
        args.redis_url or settings.redis_url,
        args.state_dir,
        topic_names=names,
        consumer_group=args.group,
        store_prefix=args.store_prefix,
        commit_interval_s=args.commit_interval,
        apply_interval_s=args.apply_interval,
        redis_ca_cert=args.redis_ca_cert or settings.redis_ca_cert,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
