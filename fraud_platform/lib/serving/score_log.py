"""Append-only JSON-lines log of every scored request.

One file per writing process, ``scores-<pid>-<start>.jsonl`` in the log folder, so several
server workers never interleave lines. By default ``ScoreLog.append`` only puts the record on a
queue; a background thread encodes, writes and flushes whatever is queued each time it wakes.
A quiet server therefore flushes every line; a busy one writes in batches (one flush per
batch). The request path pays a queue put (~1 µs) instead of JSON encoding plus a write and a
flush (~20-70 µs here), and a stalled disk does not stall requests until the queue is full.
(``background=False`` does the write on the caller's thread; ``benchmarks/scoring.py`` measures
both costs.)

If the queue is full (the disk stalls for a long time) ``append`` waits up to
``put_timeout_s`` and then drops the record, counts it in ``dropped`` and logs an error.

``read_score_log`` reads every file of a folder into one flat polars frame. A writer that was
killed mid-line leaves a torn last line: it is skipped. A malformed line anywhere else raises.

Record (see ``scoring.log_record``)::

    {"request_id", "scored_at", "model_tag", "transaction": {contract fields},
     "features": {model features}, "feature_age_s": {group: seconds | null},
     "score", "decision", "degraded", "degraded_reason", "reasons": [...]}
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from fraud_platform.lib.contracts.events import EVENT_FIELDS, TRANSACTIONS

log = logging.getLogger(__name__)

FILE_GLOB = "scores-*.jsonl"
FEATURE_PREFIX = "f_"
AGE_PREFIX = "age_s_"
_STOP = object()

_TOP_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "scored_at": pl.Datetime("us", "UTC"),
    "model_tag": pl.String(),
    "score": pl.Float64(),
    "decision": pl.String(),
    "degraded": pl.Boolean(),
    "degraded_reason": pl.String(),
}
_CONTRACT_DTYPES: dict[str, pl.DataType] = {
    "str": pl.String(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "ts": pl.Datetime("us", "UTC"),
}
_TRANSACTION_COLUMNS: dict[str, pl.DataType] = {
    f.name: _CONTRACT_DTYPES[f.kind] for f in EVENT_FIELDS[TRANSACTIONS]
}


def log_file_name(pid: int, started: datetime) -> str:
    return f"scores-{pid}-{started.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}.jsonl"


class ScoreLog:
    """Appends records to this process's file in ``folder``.

    ``background=True`` (default): ``append`` queues, a writer thread encodes, writes and flushes
    everything queued at each wake-up. ``background=False``: ``append`` encodes, writes and
    flushes on the caller's thread (under a lock).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        background: bool = True,
        max_queue: int = 10_000,
        put_timeout_s: float = 1.0,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / log_file_name(os.getpid(), datetime.now(UTC))
        self.background = background
        self._put_timeout_s = put_timeout_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._file = self.path.open("a", encoding="utf-8")
        self.written = 0
        self.dropped = 0
        self._queued = 0
        self._lock = threading.Lock()  # guards _queued (background) or the file (foreground)
        self._progress = threading.Condition()
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="score-log-writer", daemon=True)
            self._thread.start()

    @staticmethod
    def _encode(record: Any) -> str:
        return json.dumps(record, separators=(",", ":"), default=str) + "\n"

    def append(self, record: Mapping[str, Any]) -> None:
        """Log one record (not to be mutated afterwards)."""
        if self._closed:
            raise RuntimeError(f"score log {self.path} is closed")
        if self._error is not None:
            raise RuntimeError(f"score log writer for {self.path} died: {self._error!r}")
        if not self.background:
            line = self._encode(record)
            with self._lock:
                self._file.write(line)
                self._file.flush()
                self.written += 1
            return
        try:
            self._queue.put(record, timeout=self._put_timeout_s)
        except queue.Full:
            self.dropped += 1
            log.error(
                "score log %s: queue full for %.1fs, record %s dropped (%d dropped so far)",
                self.path,
                self._put_timeout_s,
                record.get("request_id"),
                self.dropped,
            )
            return
        with self._lock:
            self._queued += 1

    def _run(self) -> None:
        try:
            while True:
                batch = [self._queue.get()]
                while len(batch) < 1_000:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = any(item is _STOP for item in batch)
                lines = [self._encode(item) for item in batch if item is not _STOP]
                if lines:
                    self._file.write("".join(lines))
                    self._file.flush()
                with self._progress:
                    self.written += len(lines)
                    self._progress.notify_all()
                if stop:
                    return
        except BaseException as exc:  # noqa: BLE001 - surfaced by append() and close()
            self._error = exc
            log.exception("score log writer for %s failed", self.path)
            with self._progress:
                self._progress.notify_all()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every record appended so far is written and flushed."""
        if self._thread is None:
            return
        target = self._queued
        with self._progress:
            done = self._progress.wait_for(
                lambda: self.written >= target or self._error is not None, timeout=timeout_s
            )
        if self._error is not None:
            raise RuntimeError(f"score log writer for {self.path} died: {self._error!r}")
        if not done:
            raise TimeoutError(f"score log {self.path}: {target - self.written} records unwritten")

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued and close the file."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.error("score log %s: writer did not finish within %.0fs", self.path, timeout_s)
        with self._lock:
            self._file.close()
        if self._error is not None:
            raise RuntimeError(f"score log writer for {self.path} died: {self._error!r}")

    def __enter__(self) -> ScoreLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# reading


def _read_file(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            is_last = all(not rest.strip() for rest in lines[number:])
            if is_last:
                log.warning("%s: skipping torn last line %d", path, number)
                continue
            raise ValueError(f"{path}:{number}: malformed score-log line: {exc}") from None
    return records


def _column(values: list[Any]) -> pl.Series:
    present = [v for v in values if v is not None]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return pl.Series(values, dtype=pl.Float64)
    if all(isinstance(v, bool) for v in present):
        return pl.Series(values, dtype=pl.Boolean)
    return pl.Series([None if v is None else str(v) for v in values], dtype=pl.String)


def read_score_log(folder: str | Path) -> pl.DataFrame:
    """All records in ``folder`` as one frame, ordered by ``scored_at``.

    Columns: request_id, scored_at, model_tag, score, decision, degraded, degraded_reason, the
    transaction's contract fields (event_time as a UTC datetime), ``f_<feature>`` per model
    feature (Float64, or String for categoricals), ``age_s_<group>`` per feature group,
    ``reasons`` (list of reason names) and ``reasons_json`` (the full reasons as JSON text).
    """
    records: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob(FILE_GLOB)):
        records.extend(_read_file(path))
    feature_names = sorted({name for r in records for name in (r.get("features") or {})})
    groups = sorted({name for r in records for name in (r.get("feature_age_s") or {})})

    columns: dict[str, pl.Series] = {}
    for name, dtype in _TOP_COLUMNS.items():
        values = [r.get(name) for r in records]
        if dtype == pl.Datetime("us", "UTC"):
            columns[name] = pl.Series(name, values, dtype=pl.String).str.to_datetime(
                time_zone="UTC", time_unit="us"
            )
        else:
            columns[name] = pl.Series(name, values, dtype=dtype, strict=False)
    for name, dtype in _TRANSACTION_COLUMNS.items():
        values = [(r.get("transaction") or {}).get(name) for r in records]
        if dtype == pl.Datetime("us", "UTC"):
            columns[name] = pl.Series(name, values, dtype=pl.String).str.to_datetime(
                time_zone="UTC", time_unit="us"
            )
        else:
            columns[name] = pl.Series(name, values, dtype=dtype, strict=False)
    for name in feature_names:
        column = _column([(r.get("features") or {}).get(name) for r in records])
        columns[FEATURE_PREFIX + name] = column.alias(FEATURE_PREFIX + name)
    for group in groups:
        values = [(r.get("feature_age_s") or {}).get(group) for r in records]
        columns[AGE_PREFIX + group] = pl.Series(AGE_PREFIX + group, values, dtype=pl.Float64)
    columns["reasons"] = pl.Series(
        "reasons",
        [[reason.get("name") for reason in r.get("reasons") or []] for r in records],
        dtype=pl.List(pl.String),
    )
    columns["reasons_json"] = pl.Series(
        "reasons_json", [json.dumps(r.get("reasons") or []) for r in records], dtype=pl.String
    )
    frame = pl.DataFrame(list(columns.values()))
    return frame.sort("scored_at", maintain_order=True) if frame.height else frame
