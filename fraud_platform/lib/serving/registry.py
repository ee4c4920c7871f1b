"""The model registry record: one append-only Delta table of what happened to each model.

BentoML's model store holds the models (files and metadata, by tag); this table holds the history
that decisions are read from. One row per event:

* ``registered``: a model was trained and saved;
* ``gate_decision``: the promotion gate compared a challenger (``tag``) with the champion;
  ``details`` holds the whole decision (metric, margin, both models' metrics, period, outcome,
  ``champion_after``);
* ``promoted``: the model became the champion (by the gate, or by hand);
* ``rolled_back``: the model became the champion again, replacing the one promoted after it.

Every row also describes its model as registered: metrics, training-set table and Delta
version, features, feature service, code version; plus the run that wrote it and when.

The champion of a model name is the ``tag`` of its latest ``promoted`` or ``rolled_back`` row;
``champion`` is the one reader of that rule (the scoring service, the CLI and the Dagster assets
call it). "Latest" is the highest ``registry_version``: the Delta version of the commit that wrote
the row (``record`` numbers its rows through ``DeltaStore.append_serialized``).

Writes are idempotent per run: ``record`` writes the events of one call in ONE commit, and an
event with a ``run_id`` carries the Delta application transaction
``fraud_platform.registry.{run_id}.{event}.{tag}``. An event whose transaction is already in the
log is not written again, so a retried step of the same Dagster run adds nothing (two concurrent
writers of the same event: one commit fails, its retry finds the event recorded). Events without
a run id (manual actions from the CLI) are always new.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from fraud_platform import names
from fraud_platform.lib.features.services import SERVICE_METADATA_KEY
from fraud_platform.lib.storage.delta import Append, DeltaStore, recorded_versions

if TYPE_CHECKING:
    from deltalake import DeltaTable

TABLE = names.REGISTRY_TABLE
REGISTERED = "registered"
GATE_DECISION = "gate_decision"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"
EVENTS = (REGISTERED, GATE_DECISION, PROMOTED, ROLLED_BACK)
CHAMPION_EVENTS = (PROMOTED, ROLLED_BACK)
APP_ID_PREFIX = "fraud_platform.registry"
METADATA_KEY = "fraud_platform.registry"

SCHEMA = pa.schema(
    [
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("tag", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("metrics", pa.string(), nullable=False),  # JSON object
        pa.field("training_set_table", pa.string()),
        pa.field("training_set_version", pa.int64()),
        pa.field("features", pa.list_(pa.string()), nullable=False),
        pa.field("feature_service", pa.string()),
        pa.field("code_version", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("details", pa.string(), nullable=False),  # JSON object
        pa.field("recorded_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("registry_version", pa.int64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class ModelEvent:
    """One row of the registry, before it is recorded."""

    tag: str
    event: str
    reason: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    training_set_table: str | None = None
    training_set_version: int | None = None
    features: tuple[str, ...] = ()
    feature_service: str | None = None
    code_version: str | None = None
    run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown registry event {self.event!r} (one of {EVENTS})")
        if ":" not in self.tag:
            raise ValueError(f"model tag {self.tag!r} is not name:version")

    @property
    def model_name(self) -> str:
        return self.tag.split(":", 1)[0]

    @property
    def app_id(self) -> str | None:
        """The application transaction that makes this event idempotent within its run."""
        if self.run_id is None:
            return None
        return f"{APP_ID_PREFIX}.{self.run_id}.{self.event}.{self.tag}"

    @classmethod
    def about(
        cls,
        tag: str,
        metadata: Mapping[str, Any],
        event: str,
        *,
        reason: str = "",
        run_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> ModelEvent:
        """An event about the model ``tag``, described by the metadata it was registered with
        (``metrics``, ``training_set_table``, ``training_set_delta_version``, ``features``,
        ``feature_service``, ``code_version``; missing ones stay empty)."""
        version = metadata.get("training_set_delta_version")
        return cls(
            tag=tag,
            event=event,
            reason=reason,
            metrics=dict(metadata.get("metrics") or {}),
            training_set_table=metadata.get("training_set_table"),
            training_set_version=int(version) if version is not None else None,
            features=tuple(metadata.get("features") or ()),
            feature_service=metadata.get(SERVICE_METADATA_KEY),
            code_version=metadata.get("code_version"),
            run_id=run_id,
            details=dict(details or {}),
        )


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _rows(events: Sequence[ModelEvent], recorded_at: datetime, version: int) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "model_name": e.model_name,
                "tag": e.tag,
                "event": e.event,
                "reason": e.reason,
                "metrics": _json(e.metrics),
                "training_set_table": e.training_set_table,
                "training_set_version": e.training_set_version,
                "features": list(e.features),
                "feature_service": e.feature_service,
                "code_version": e.code_version,
                "run_id": e.run_id,
                "details": _json(e.details),
                "recorded_at": recorded_at,
                "registry_version": version,
            }
            for e in events
        ],
        schema=SCHEMA,
    )


def record(
    store: DeltaStore, events: Sequence[ModelEvent], *, now: datetime | None = None
) -> int | None:
    """Append ``events`` in one commit, leaving out those their run already recorded (module
    docstring); returns the new version, or None when nothing was new. At most one champion
    event per model name per call: the champion must not depend on the order within a commit."""
    champions = [e.model_name for e in events if e.event in CHAMPION_EVENTS]
    if len(champions) != len(set(champions)):
        raise ValueError(f"more than one promotion or rollback of one model in {events}")
    recorded_at = now or datetime.now(UTC)

    def build(snapshot: DeltaTable) -> Append | None:
        done = recorded_versions(snapshot, [e.app_id for e in events if e.app_id is not None])
        new = [e for e in events if e.app_id is None or e.app_id not in done]
        if not new:
            return None
        return Append(
            _rows(new, recorded_at, snapshot.version() + 1),
            transactions={e.app_id: 1 for e in new if e.app_id is not None},
            metadata={METADATA_KEY: _json({"events": [[e.event, e.tag] for e in new]})},
        )

    return store.append_serialized(TABLE, SCHEMA, build)


def events(store: DeltaStore, name: str, tag: str | None = None) -> pl.DataFrame:
    """The events of the model ``name`` (of one ``tag`` if given), oldest first."""
    if not store.exists(TABLE):
        return pl.from_arrow(SCHEMA.empty_table())
    frame = store.read(TABLE).filter(pl.col("model_name") == name)
    if tag is not None:
        frame = frame.filter(pl.col("tag") == tag)
    return frame.sort("registry_version", maintain_order=True)


def _champion_events(store: DeltaStore, name: str) -> list[tuple[str, str]]:
    rows = events(store, name).filter(pl.col("event").is_in(CHAMPION_EVENTS))
    return list(zip(rows["event"].to_list(), rows["tag"].to_list(), strict=True))


def champion(store: DeltaStore, name: str) -> str | None:
    """The champion of the model ``name``: the tag of its latest promotion or rollback."""
    found = _champion_events(store, name)
    return found[-1][1] if found else None


def champions(store: DeltaStore, name: str) -> list[str]:
    """The champions a rollback can return to, oldest first; the current one last.

    A promotion pushes its tag (unless it already is the champion); a rollback to ``tag`` pops
    the champions above it (nothing when it already is the champion: two rollbacks recorded from
    the same state count once)."""
    stack: list[str] = []
    for event, tag in _champion_events(store, name):
        if stack and stack[-1] == tag:
            continue
        if event == ROLLED_BACK and tag in stack:
            del stack[stack.index(tag) + 1 :]
        else:
            stack.append(tag)
    return stack


def gate_decisions(store: DeltaStore, name: str) -> list[dict[str, Any]]:
    """Every promotion-gate decision about ``name``, oldest first (the ``details`` of each
    ``gate_decision`` row, with its run id and time)."""
    rows = events(store, name).filter(pl.col("event") == GATE_DECISION)
    return [
        {**json.loads(row["details"]), "run_id": row["run_id"], "recorded_at": row["recorded_at"]}
        for row in rows.iter_rows(named=True)
    ]


class RegistryWatch:
    """The registry's latest version, cheaply on every look after the first: the table stays
    open and a look reads only the log entries added since (``update_incremental``: ~1.5 ms on a
    local disk). Not thread-safe: one caller at a time."""

    def __init__(self, store: DeltaStore) -> None:
        self._store = store
        self._table: DeltaTable | None = None

    def latest(self) -> int | None:
        """The latest version of the registry table (None while there is no table)."""
        if self._table is None:
            if not self._store.exists(TABLE):
                return None
            self._table = self._store.open(TABLE)
        else:
            self._table.update_incremental()
        return self._table.version()
