"""The demo's replay of the held-out period: against the batch snapshot (``snapshot_replay``,
the default) or in real time (``realtime_replay``, ``fraud-platform demo --realtime``).

In real time, the stream worker's consumer group starts where bronze stands (``lib/streaming/bootstrap``),
then the held-out transactions and account events are published in event-time order at
``rate`` events/s while the worker keeps the online store current; each sampled transaction
is scored through ``/score`` as it arrives (before its own event is published, as a payment
system asks before it books). Freshness is the time from an event's produce call until its
``user_txn_velocity`` row is readable online. Afterwards, once the batch path has caught up
with the period, the same transactions are scored offline by the same model on point-in-time
features from the offline store (``offline_scores``): the online and offline AP and the score
differences are compared.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from fraud_platform.lib.contracts.events import ACCOUNT_EVENTS, TRANSACTIONS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS, USER_TXN_VELOCITY
from fraud_platform.lib.features.online.layout import HISTORY_HORIZON, online_key, to_micros
from fraud_platform.lib.kafka.producer import Producer, event_messages
from fraud_platform.lib.streaming.freshness import FreshnessProbe, percentile
from fraud_platform.settings import Settings
from fraud_platform.tools.demo_scorer import (
    GatedScorer,
    ScoredReplay,
    compare_online_offline,
)
from fraud_platform.tools.demo_state import ALREADY_REPLAYED

Say = Callable[[str], None]
TICK_S = 0.01
# How far (in event time) publishing may run ahead of the oldest transaction waiting for the
# stream worker: at ~3,000x real time a second of freshness is most of an hour, and the store
# keeps an entity's rows for HISTORY_HORIZON after its newest one; a transaction scored later
# than that behind a busy entity's newest events could find its row trimmed.
MAX_AHEAD = HISTORY_HORIZON / 2
REPLAY_FIGURES = "replay_figures.json"  # in the data directory: the replay's summary figures


@dataclass(frozen=True)
class RealtimeRun:
    """What the real-time replay needs from the demo: where to run the batch catch-up."""

    settings: Settings
    instance: Any  # dagster.DagsterInstance
    defs: Any  # dagster.Definitions
    log_dir: Path
    batch_config: dict[str, dict]
    say: Say


def realtime_replay(
    run: RealtimeRun,
    events: list[tuple[str, dict[str, Any]]],
    sample: list[dict[str, Any]],
    truth: Mapping[str, str],
    *,
    champion: str | None,
    rate: int,
    identity: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], list]:
    """The stream worker from bronze, the held-out period published and scored as it arrives,
    the batch path catching up, then the same transactions scored offline; returns the replay
    figures, the stream's bootstrap figures and the catch-up's layer results."""
    from fraud_platform.tools.pipeline import run_layers
    from fraud_platform.tools.serving_process import start_scoring_service, stop_scoring_service

    say = run.say
    say("starting the stream worker where bronze stands ...")
    stream = start_stream_from_bronze(run.settings)
    say(
        f"  {stream['stream_started_from']}: {stream['stream_seeded_events']:,} events seeded "
        f"into its entity stores in {stream['stream_bootstrap_s']} s"
    )
    stream_figures = {k: v for k, v in stream.items() if k != "stream_worker_pid"}
    earlier = earlier_replay(run.settings, identity)
    if earlier is not None:
        say(
            "the held-out period was replayed by an earlier run in this data directory: its "
            "figures below (the online store has moved past the period, so its lookups would "
            "read rows the keep rule dropped; `fraud-platform demo --fresh` replays it again)"
        )
        return earlier, stream_figures, []
    say("starting the scoring service ...")
    service = start_scoring_service(run.settings)
    try:
        say(
            f"publishing the held-out period ({len(events):,} events) in event-time order at "
            f"{rate:,}/s; {len(sample):,} of its transactions scored through /score as they "
            "arrive ..."
        )
        replay, online = replay_in_real_time(
            run.settings,
            events,
            {t["transaction_id"] for t in sample},
            truth,
            rate=rate,
            identity=identity,
            say=say,
        )
    finally:
        stop_scoring_service(service)
    replay |= _wait_for_stream(run.settings)
    say(
        f"  the stream worker had {replay['stream_lag_after_replay']:,} events left to apply "
        f"after the last one was published; caught up in {replay['stream_caught_up_s']} s"
    )
    say("the batch path catches up with the replayed period (the repair path) ...")
    layers = run_layers(
        run.instance,
        ("ingestion", "transform", "features"),
        defs=run.defs,
        on_progress=say,
        log_dir=run.log_dir,
        asset_config=run.batch_config,
        partitions_from=events[0][1]["event_time"].date().isoformat() if events else None,
    )
    for layer in layers:  # apart from the first pass's in the summary's layer_seconds
        layer.layer = f"catch-up {layer.layer}"
    if champion:
        replay |= compare_online_offline(
            online.scores,
            offline_scores(run.settings, champion, sample),
            truth,
            online.degraded_ids,
        )
    (run.settings.data_dir / REPLAY_FIGURES).write_text(json.dumps(replay, default=str))
    return replay, stream_figures, layers


def _wait_for_stream(settings: Settings, timeout_s: float = 120.0) -> dict[str, Any]:
    """The worker's consumer lag when the replay ended, and how long until it reached 0."""
    from fraud_platform.lib.streaming.app import CONSUMER_GROUP
    from fraud_platform.lib.streaming.health import consumer_lag

    started = time.perf_counter()
    topics = [TRANSACTIONS, ACCOUNT_EVENTS]
    first = lag = sum(t.lag for t in consumer_lag(settings.kafka_bootstrap, CONSUMER_GROUP, topics))
    while lag and time.perf_counter() - started < timeout_s:
        time.sleep(0.5)
        lag = sum(t.lag for t in consumer_lag(settings.kafka_bootstrap, CONSUMER_GROUP, topics))
    return {
        "stream_lag_after_replay": first,
        "stream_lag_final": lag,
        "stream_caught_up_s": round(time.perf_counter() - started, 1),
    }


def start_stream_from_bronze(settings: Settings) -> dict[str, Any]:
    """Bootstrap the worker's group from bronze (a group with offsets resumes) and start it."""
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.lib.storage.redis_connection import connect
    from fraud_platform.lib.streaming.app import CONSUMER_GROUP
    from fraud_platform.lib.streaming.bootstrap import bootstrap_group
    from fraud_platform.lib.streaming.processor import StreamProcessor
    from fraud_platform.tools.services import start_stream_worker
    from fraud_platform.tools.stream_worker import ensure_platform_topics

    started = time.perf_counter()
    ensure_platform_topics(settings.kafka_bootstrap)
    client = connect(settings.redis_url, ca_cert=settings.redis_ca_cert, socket_timeout=30)
    processor = StreamProcessor(client, FEATURE_GROUPS)
    store = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    result = bootstrap_group(processor, store, settings.kafka_bootstrap, CONSUMER_GROUP)
    pid = start_stream_worker(settings)
    return {
        "stream_started_from": result.started_from,
        "stream_seeded_events": sum(result.seeded_events.values()),
        "stream_bootstrap_s": round(time.perf_counter() - started, 1),
        "stream_worker_pid": pid,
    }


def _holdout_marker(settings: Settings, identity: Mapping[str, Any]) -> tuple[bool, Callable]:
    """(already published, mark as published) for this exact held-out period."""
    marker = settings.data_dir / "published_holdout.json"
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    done = marker.exists() and json.loads(marker.read_text()).get("key") == key
    return done, lambda: marker.write_text(json.dumps({"key": key}))


def earlier_replay(settings: Settings, identity: Mapping[str, Any]) -> dict[str, Any] | None:
    """The summary figures of this exact held-out period's replay by an earlier run in this
    data directory (none scored if that run stopped before its figures were written); None
    when it was not replayed."""
    published, _ = _holdout_marker(settings, identity)
    if not published:
        return None
    path = settings.data_dir / REPLAY_FIGURES
    figures = json.loads(path.read_text()) if path.exists() else dict(NOT_SCORED)
    return {**figures, "replay_mode": ALREADY_REPLAYED, "replay_events_published": 0}


NOT_SCORED: dict[str, Any] = {
    "scored": 0,
    "decisions": {},
    "degraded": 0,
    "replay_auc": None,
    "replay_average_precision": None,
    "score_p50_ms": None,
    "score_p99_ms": None,
}


def replay_in_real_time(
    settings: Settings,
    events: list[tuple[str, dict[str, Any]]],
    sample_ids: set[str],
    truth: Mapping[str, str],
    *,
    rate: int,
    identity: Mapping[str, Any],
    say: Say = print,
) -> tuple[dict[str, Any], ScoredReplay]:
    """Publish ``events`` (event-time order) at ``rate``/s; each transaction of ``sample_ids``
    is scored as it arrives, once the stream worker has applied every event published before it
    (``AppliedBarrier``: what a deployment at the real rate sees); returns the summary figures
    and what was scored. A period published before is not replayed (``earlier_replay``)."""
    from fraud_platform.lib.storage.redis_connection import connect
    from fraud_platform.lib.streaming.app import CONSUMER_GROUP
    from fraud_platform.lib.streaming.applied import AppliedBarrier

    _, mark_published = _holdout_marker(settings, identity)
    client = connect(settings.redis_url, ca_cert=settings.redis_ca_cert, socket_timeout=30)
    probe = FreshnessProbe(client)
    barrier = AppliedBarrier(client, CONSUMER_GROUP, (TRANSACTIONS, ACCOUNT_EVENTS))
    producer = Producer(settings.kafka_bootstrap, {"linger.ms": 2}, barrier.delivered)
    scorer = GatedScorer(f"http://127.0.0.1:{settings.service_port}/score", barrier, say)
    scorer.start(len(sample_ids))
    per_tick = max(1, int(rate * TICK_S))
    started = time.perf_counter()
    for index, (topic, event) in enumerate(events):
        if index % per_tick == 0:
            target = started + (index // per_tick) * TICK_S
            while (wait := target - time.perf_counter()) > 0:
                time.sleep(min(wait, 0.002))
        event_time = event["event_time"]
        while (oldest := scorer.oldest_waiting()) is not None and event_time - oldest > MAX_AHEAD:
            producer.poll(0.002)  # serves the delivery reports the scorer waits for
        if topic == TRANSACTIONS and event["transaction_id"] in sample_ids:
            scorer.submit(event, published_before=index)
            key = online_key(USER_TXN_VELOCITY, event["user_id"])
            probe.watch(key, to_micros(event["event_time"]))
        producer.send(event_messages([(topic, event)]))
    producer.flush()
    mark_published()
    publish_s = time.perf_counter() - started
    result = scorer.finish()
    seen, never = probe.stop()
    waits = sorted(result.gate_waits_ms)
    summary = {
        "replay_mode": "real time",
        "replay_events_published": len(events),
        "replay_rate_events_per_s": round(len(events) / publish_s),
        **result.summary(truth),
        "applied_wait_p50_ms": _round(percentile(waits, 0.5)),
        "applied_wait_p99_ms": _round(percentile(waits, 0.99)),
        "online_freshness_p50_ms": _round(percentile(seen, 0.5)),
        "online_freshness_p99_ms": _round(percentile(seen, 0.99)),
        "online_freshness_samples": len(seen),
        "online_freshness_never_seen": never,
    }
    return summary, result


def online_store_state(settings: Settings) -> dict[str, int]:
    """Keys in the online store's database and groups with a snapshot checkpoint, as the
    replay starts: a store emptied since the features layer (another process flushing a shared
    database) shows as 0 here rather than only as degraded answers."""
    from fraud_platform.lib.features.online.snapshot import checkpoint_key
    from fraud_platform.lib.storage.redis_connection import connect

    client = connect(settings.redis_url, ca_cert=settings.redis_ca_cert, socket_timeout=30)
    try:
        return {
            "online_keys_before_replay": int(client.dbsize()),
            "snapshot_checkpoints_before_replay": int(client.hlen(checkpoint_key())),
        }
    finally:
        client.close()


def snapshot_replay(
    settings: Settings, transactions: list[dict], truth: Mapping[str, str], say: Say = print
) -> dict[str, Any]:
    """Send held-out transactions to ``/score`` one by one against the online store as the
    batch path left it (the default demo); latency measured client-side."""
    url = f"http://127.0.0.1:{settings.service_port}/score"
    result = ScoredReplay()
    store = online_store_state(settings)
    with httpx.Client(timeout=10) as client:
        for index, txn in enumerate(transactions, start=1):
            result.score(client, url, txn)
            if index % 500 == 0:
                say(f"  scored {index:,}/{len(transactions):,}")
    return {**result.summary(truth), **store}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def offline_scores(
    settings: Settings, champion: str, sample: list[dict[str, Any]]
) -> dict[str, float]:
    """The champion's scores of ``sample`` on point-in-time features from the offline store
    (the feature tables after the batch path caught up with the replayed period)."""
    from fraud_platform.lib.features.services import service_for_model
    from fraud_platform.lib.features.training_frame import build_training_frame
    from fraud_platform.lib.model.input import predict_proba
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.lib.streaming.verify import records_frame
    from fraud_platform.names import feature_table
    from fraud_platform.resources.model_store import ModelStoreResource

    delta = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    store = ModelStoreResource(home=str(settings.bentoml_home), delta=delta)
    entry = store.get(champion)
    model = store.load_catboost(str(entry.tag))
    service = service_for_model(entry.info.metadata)
    group_rows = {
        name: pl.scan_delta(
            delta.uri(feature_table(name)),
            storage_options=dict(delta.storage_options) or None,
        )
        for name in service.group_names
    }
    transactions = records_frame(sample).with_columns(
        pl.lit(None, pl.Boolean).alias("is_fraud"), pl.lit(None, pl.String).alias("fraud_type")
    )
    frame = build_training_frame(transactions, group_rows, service)
    values = predict_proba(model, frame)
    return dict(zip(frame["transaction_id"].to_list(), map(float, values), strict=True))


def holdout_events(
    events_by_topic: Mapping[str, list[dict[str, Any]]], cutoff: datetime
) -> list[tuple[str, dict[str, Any]]]:
    """Transactions and account events at or after ``cutoff``, in event-time order (labels of
    the held-out period are not published: they would arrive weeks later)."""
    merged = [
        (event["event_time"], order, topic, event)
        for order, topic in enumerate((TRANSACTIONS, ACCOUNT_EVENTS))
        for event in events_by_topic[topic]
        if event["event_time"] >= cutoff
    ]
    merged.sort(key=lambda item: (item[0], item[1]))
    return [(topic, event) for _, _, topic, event in merged]
