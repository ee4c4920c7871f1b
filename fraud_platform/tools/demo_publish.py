"""The demo's simulation onto Kafka, a week at a time, with bounded memory at any size.

The simulator streams a week at a time (``simulate_chunks``). The embedded broker is the other
memory hog: noida keeps every retained event in memory (measured ~1.4 KB per event: 3.1 GB for
2.17M events) and answers a consumer's first fetch with the whole backlog. So once
``INGEST_EVERY_EVENTS`` events are on the topics, the demo runs the ingestion layer and, on the
embedded noida broker only, deletes the records bronze has committed (bronze is the system of
record; a broker shared with other consumers is never trimmed).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from fraud_platform.lib.contracts.events import TOPICS, format_timestamp
from fraud_platform.lib.simulation.engine import Simulation
from fraud_platform.settings import Settings

# ~1.4 GB in noida, and a first fetch under librdkafka's 2 GB response ceiling.
INGEST_EVERY_EVENTS = 1_000_000


@dataclass
class HeldOut:
    """What the replay needs of a simulation streamed in chunks: the events from ``cutoff``
    on, their ground truth, and the number of events per topic."""

    cutoff: datetime
    simulation: Simulation = field(default_factory=lambda: Simulation([], [], [], {}))
    counts: Counter[str] = field(default_factory=Counter)

    def collect(self, chunks: Iterable[Simulation]) -> Iterator[Simulation]:
        for chunk in chunks:
            for topic, events in chunk.events_by_topic().items():
                self.counts[topic] += len(events)
            kept = [e for e in chunk.transactions if e["event_time"] >= self.cutoff]
            self.simulation.transactions += kept
            self.simulation.account_events += [
                e for e in chunk.account_events if e["event_time"] >= self.cutoff
            ]
            truth = chunk.fraud_type_by_transaction
            self.simulation.fraud_type_by_transaction |= {
                e["transaction_id"]: truth[e["transaction_id"]]
                for e in kept
                if e["transaction_id"] in truth
            }
            yield chunk


class _Batch:
    """Chunks from ``source`` until they hold ``limit`` events; ``exhausted`` once it ends."""

    def __init__(self, source: Iterator[Simulation], limit: int) -> None:
        self.source, self.limit, self.exhausted = source, limit, False

    def __iter__(self) -> Iterator[Simulation]:
        events = 0
        while events < self.limit:
            chunk = next(self.source, None)
            if chunk is None:
                self.exhausted = True
                return
            events += sum(len(e) for e in chunk.events_by_topic().values())
            yield chunk


def publish_once(
    settings: Settings,
    identity: dict[str, Any],
    chunks: Iterable[Simulation],
    cutoff: datetime,
    *,
    ingest: Callable[[], None],
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """Publish events before ``cutoff`` unless this exact simulation (``identity``) was already
    published: a producer does not send the same events twice, so a second demo run adds
    nothing. ``chunks`` are consumed either way. Between batches of ``INGEST_EVERY_EVENTS``
    events, ``ingest()`` runs, then ``trim_ingested``."""
    from fraud_platform.lib.simulation import publish_chunks
    from fraud_platform.tools.pipeline import peak_rss_mb

    marker = settings.data_dir / "published_simulation.json"
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        say("simulation already published to Kafka (same config): not sending it again")
        deque(chunks, maxlen=0)
        return {}

    sent = {"before": 0}

    def progress(done: int) -> None:
        say(f"  published {sent['before'] + done:,} events (peak RSS {peak_rss_mb():,.0f} MiB)")

    source = iter(chunks)
    counts: Counter[str] = Counter()
    while True:
        batch = _Batch(source, INGEST_EVERY_EVENTS)
        counts.update(
            publish_chunks(batch, settings.kafka_bootstrap, until=cutoff, progress=progress)
        )
        sent["before"] = sum(counts.values())
        if batch.exhausted:
            break
        ingest()
        trim_ingested(settings, say)
    published = {topic: counts.get(topic, 0) for topic in TOPICS}
    marker.write_text(json.dumps({"key": key, "simulation": identity, "counts": published}))
    return published


def trim_ingested(settings: Settings, say: Callable[[str], None] = print) -> None:
    """On the embedded noida broker, delete the records bronze has committed (frees its memory;
    tansu's DeleteRecords drops the connection, and a real cluster keeps its retention)."""
    if not (settings.kafka_embedded and settings.broker == "noida"):
        return
    from fraud_platform.lib.ingestion.bronze import committed_offsets
    from fraud_platform.lib.kafka.admin import delete_records_before
    from fraud_platform.lib.storage.delta import DeltaStore

    store = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    offsets = {topic: committed_offsets(topic, store) for topic in TOPICS}
    trimmed = delete_records_before(settings.kafka_bootstrap, offsets)
    say(f"  embedded broker: records bronze has committed deleted ({trimmed} partitions)")


def demo_identity(config: Any, start: datetime) -> dict[str, Any]:
    return {**asdict(config), "start": format_timestamp(start)}
