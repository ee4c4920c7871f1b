"""The run-records table: one row per successful training, promotion or backtest run with its
key figures, appended once per run (a Delta application transaction keyed by the run id makes
a second append of the same run a no-op)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime

import pyarrow as pa

from fraud_platform.lib.storage.delta import Append, DeltaStore, recorded_versions

APP_PREFIX = "fraud_platform.run_records."


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    job_name: str
    kinds: str  # comma-separated: training, promotion, backtest
    started_at: datetime | None
    ended_at: datetime | None
    duration_s: float | None
    model_tag: str | None
    test_average_precision: float | None
    test_auc_roc: float | None
    decision: str | None
    champion: str | None
    backtest: str | None  # JSON: per model, AP and AUC over the backtest range
    recorded_at: datetime


SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("job_name", pa.string()),
        ("kinds", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("ended_at", pa.timestamp("us", tz="UTC")),
        ("duration_s", pa.float64()),
        ("model_tag", pa.string()),
        ("test_average_precision", pa.float64()),
        ("test_auc_roc", pa.float64()),
        ("decision", pa.string()),
        ("champion", pa.string()),
        ("backtest", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)
assert [f.name for f in fields(RunRecord)] == SCHEMA.names


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _str(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _time(timestamp: float | None) -> datetime | None:
    return datetime.fromtimestamp(timestamp, UTC) if timestamp is not None else None


def run_record(
    run_id: str,
    job_name: str,
    materialized: Mapping[str, Mapping[str, object]],
    *,
    model_asset: str,
    champion_asset: str,
    backtest_asset: str,
    started: float | None,
    ended: float | None,
) -> RunRecord | None:
    """The record of a run from the metadata of the assets it materialized (asset key string ->
    plain metadata values); None when it trained, promoted and backtested nothing."""
    model = materialized.get(model_asset)
    gate = materialized.get(champion_asset)
    backtest = materialized.get(backtest_asset)
    kinds = [k for k, m in (("training", model), ("promotion", gate), ("backtest", backtest)) if m]
    if not kinds:
        return None
    model, gate, backtest = model or {}, gate or {}, backtest or {}
    metrics = backtest.get("metrics")
    summary = (
        json.dumps(
            {
                tag: {k: m.get(k) for k in ("average_precision", "auc_roc") if k in m}
                for tag, m in metrics.items()
                if isinstance(m, Mapping)
            },
            sort_keys=True,
        )
        if isinstance(metrics, Mapping)
        else None
    )
    return RunRecord(
        run_id=run_id,
        job_name=job_name,
        kinds=",".join(kinds),
        started_at=_time(started),
        ended_at=_time(ended),
        duration_s=round(ended - started, 3) if started is not None and ended is not None else None,
        model_tag=_str(model.get("model_tag")) or _str(gate.get("challenger")),
        test_average_precision=_first(
            _float(model.get("test_average_precision")), _float(gate.get("test_average_precision"))
        ),
        test_auc_roc=_first(_float(model.get("test_auc_roc")), _float(gate.get("test_auc_roc"))),
        decision=_str(gate.get("decision")),
        champion=_str(gate.get("champion")),
        backtest=summary,
        recorded_at=datetime.now(UTC),
    )


def append_run_record(store: DeltaStore, table: str, record: RunRecord) -> int | None:
    """Append the record unless this run was already recorded; returns the new version or
    None when it was."""
    app_id = APP_PREFIX + record.run_id

    def build(snapshot) -> Append | None:
        if recorded_versions(snapshot, [app_id]):
            return None
        rows = pa.Table.from_pylist([asdict(record)], schema=SCHEMA)
        return Append(rows=rows, transactions={app_id: 1})

    return store.append_serialized(table, SCHEMA, build)
