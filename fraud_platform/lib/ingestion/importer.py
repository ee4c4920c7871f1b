"""Import a team's own history (Parquet or CSV files) straight into the bronze Delta tables.

The same contract, validation, dead letters and exactly-once guarantee as Kafka ingestion
(``bronze.py``), with the file in the role of a Kafka partition:

* A file's identity is the SHA-256 of its content; a row's is its index in the file. Bronze rows
  carry ``_topic = "file:<sha256[:20]>"``, ``_partition = 0``, ``_offset = row index``.
* The file is read as a stream of batches (polars) and validated a batch at a time
  (``import_validation``: columnar checks, the reference validator for any row failing one).
  Up to ``COMMIT_ROWS`` rows make ONE append commit to the bronze table (deltalake writes one
  file per event date they touch), carrying the Delta application transaction
  ``fraud_platform.import.<topic>.<sha256>`` = index of the next row. Rejects of those rows are
  committed to ``bronze/dead_letter`` before it, under
  ``fraud_platform.import_dead_letter.<topic>.<sha256>`` (rows below it are not written again),
  exactly as for Kafka. A re-import of the same file (any name, any folder) starts at the
  recorded row: it adds nothing; a crash mid-file resumes after the last committed rows.

``publish_files`` produces the same mapped rows to the topics instead (Kafka ingestion then
validates them); a publish is not deduplicated by the broker: silver keeps the first copy of an
id.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import ColumnProperties, WriterProperties

from fraud_platform.lib.contracts.events import (
    DEAD_LETTER_SCHEMA,
    EVENT_DATE_COLUMN,
    EVENT_FIELDS,
    EVENT_ID_FIELD,
    EVENT_TIME_FIELD,
    KEY_FIELD,
    SCHEMA_VERSION,
    TOPICS,
    bronze_schema,
)
from fraud_platform.lib.ingestion.bronze import ensure_bronze_tables
from fraud_platform.lib.ingestion.import_mapping import ImportMapping, mapped_frame
from fraud_platform.lib.ingestion.import_sources import (
    ImportFailed,
    batches,
    columns_of,
    file_sha256,
    row_count,
    source_files,
)
from fraud_platform.lib.ingestion.import_validation import OFFSET, validate_rows
from fraud_platform.lib.ingestion.profiles import ensure_bronze_tables as ensure_profile_tables
from fraud_platform.lib.storage.delta import DeltaStore, commit, recorded_versions

log = logging.getLogger(__name__)

COMMIT_ROWS = (
    2_000_000  # rows per bronze commit (in memory at once; one file per event date touched)
)
BATCH_ROWS = 1 << 18  # rows read and validated at once (memory: a few batches)
METADATA_KEY = "fraud_platform.import"


@dataclass
class FileResult:
    path: str
    sha256: str
    rows: int
    accepted: int = 0
    rejected: int = 0
    already_imported: int = 0
    """Rows skipped because an earlier import of the same content committed them."""


@dataclass
class ImportResult:
    contract: str
    files: list[FileResult] = field(default_factory=list)
    elapsed_s: float = 0.0
    event_dates: tuple[date, date] | None = None

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)


def import_app_id(contract: str, sha256: str) -> str:
    return f"fraud_platform.import.{contract}.{sha256}"


def import_dead_letter_app_id(contract: str, sha256: str) -> str:
    return f"fraud_platform.import_dead_letter.{contract}.{sha256}"


# --------------------------------------------------------------------------------------------
# One file


def bronze_writer_properties(contract: str) -> WriterProperties:
    """Parquet settings of the imported bronze files. Row-group statistics (the Delta log's file
    statistics come from them) without the page index; the event id, the times and ``_offset``
    (unique per row, so a dictionary only costs) delta-encoded. Measured on 1.07M thin
    transactions over 180 date partitions: ~25% less CPU than deltalake's defaults, files 20%
    smaller (30 MB against 38 MB)."""
    encodings = {EVENT_ID_FIELD[contract]: "DELTA_BYTE_ARRAY", OFFSET: "DELTA_BINARY_PACKED"}
    encodings |= {f.name: "DELTA_BINARY_PACKED" for f in EVENT_FIELDS[contract] if f.kind == "ts"}
    return WriterProperties(
        default_column_properties=ColumnProperties(statistics_enabled="CHUNK"),
        column_properties={
            name: ColumnProperties(
                dictionary_enabled=False, statistics_enabled="CHUNK", encoding=encoding
            )
            for name, encoding in encodings.items()
        },
    )


def _stream_schema(contract: str) -> pa.Schema:
    """The bronze schema with strings as string views: polars hands its strings over as views,
    and deltalake takes them as they are (a cast to string would copy every value)."""
    return pa.schema(
        f.with_type(pa.string_view()) if pa.types.is_string(f.type) else f
        for f in bronze_schema(contract)
    )


@dataclass
class _Context:
    contract: str
    store: DeltaStore
    now: datetime
    progress: Callable[[str], None]
    schema: pa.Schema


class _Rows:
    """A file's batches, taken a given number of rows at a time (a batch straddling two commits
    is split between them)."""

    def __init__(self, frames: Iterator[pl.DataFrame]) -> None:
        self._frames = frames
        self._pending: pl.DataFrame | None = None

    def take(self, rows: int) -> Iterator[pl.DataFrame]:
        while rows > 0:
            frame = self._pending if self._pending is not None else next(self._frames, None)
            self._pending = None
            if frame is None:
                raise ImportFailed(f"the file ended {rows:,} rows early (changed while read?)")
            if frame.height > rows:
                frame, self._pending = frame.slice(0, rows), frame.slice(rows)
            rows -= frame.height
            if frame.height:
                yield frame


@dataclass
class _Commit:
    """Rows ``first_row`` to ``end`` of a file: one bronze commit."""

    first_row: int
    end: int
    accepted: int = 0
    tables: list[pa.Table] = field(default_factory=list)
    rejects: list[tuple[int, bytes, str]] = field(default_factory=list)
    dates: tuple[date, date] | None = None


def _import_file(
    ctx: _Context, path: Path, kind: str, mapping: ImportMapping, result: ImportResult
) -> FileResult:
    sha = file_sha256(path)
    columns, constants = mapping.resolve(columns_of(path, kind))
    bronze, dead = ensure_bronze_tables(ctx.contract, ctx.store)
    done = bronze.transaction_version(import_app_id(ctx.contract, sha)) or 0
    total = row_count(path, kind)
    file_result = FileResult(str(path), sha, total, already_imported=done)
    if done >= total:
        ctx.progress(f"{path.name}: already imported ({total:,} rows, sha256 {sha[:12]})")
        return file_result
    rows = _Rows(batches(path, kind, sorted(set(columns.values())), done, BATCH_ROWS))
    started = time.monotonic()
    position = done
    while position < total:
        unit = _Commit(position, min(position + COMMIT_ROWS, total))
        for batch in rows.take(unit.end - unit.first_row):
            _validate_batch(ctx, unit, batch, position, sha, columns, constants)
            position += batch.height
            rate = (position - done) / max(time.monotonic() - started, 1e-9)
            ctx.progress(
                f"{path.name}: {position:,}/{total:,} rows, "
                f"+{file_result.accepted + unit.accepted:,} accepted, "
                f"{file_result.rejected + len(unit.rejects):,} dead letters ({rate:,.0f} rows/s)"
            )
        _commit(ctx, unit, bronze, dead, path, sha)
        file_result.accepted += unit.accepted
        file_result.rejected += len(unit.rejects)
        if unit.dates is not None:
            old = result.event_dates or unit.dates
            result.event_dates = (min(old[0], unit.dates[0]), max(old[1], unit.dates[1]))
    return file_result


def _validate_batch(
    ctx: _Context,
    unit: _Commit,
    batch: pl.DataFrame,
    first_row: int,
    sha: str,
    columns: dict[str, str],
    constants: dict[str, Any],
) -> None:
    """Validate rows ``first_row ..`` (a batch) and add them to the commit as bronze rows."""
    contract = ctx.contract
    checked = validate_rows(batch, first_row, contract, columns, constants, ctx.now)
    unit.rejects.extend(checked.rejects)
    unit.accepted += checked.accepted.height
    table = checked.accepted.with_columns(
        pl.lit(SCHEMA_VERSION, pl.Int32).alias("schema_version"),
        pl.lit(f"file:{sha[:20]}").alias("_topic"),
        pl.lit(0, pl.Int32).alias("_partition"),
        pl.lit(ctx.now).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.col(EVENT_TIME_FIELD[contract]).dt.date().alias(EVENT_DATE_COLUMN),
    ).select(bronze_schema(contract).names)
    if table.height:
        low, high = table[EVENT_DATE_COLUMN].min(), table[EVENT_DATE_COLUMN].max()
        old = unit.dates or (low, high)
        unit.dates = (min(old[0], low), max(old[1], high))  # type: ignore[type-var]
        # polars' string views as they are (deltalake takes them; a cast to string copies)
        arrow = table.to_arrow(compat_level=pl.CompatLevel.newest())
        unit.tables.append(arrow.cast(ctx.schema))


def _commit(ctx: _Context, unit: _Commit, bronze: Any, dead: Any, path: Path, sha: str) -> None:
    """The commit's dead letters, then its rows in ONE bronze commit recording ``unit.end``."""
    counts = {"accepted": unit.accepted, "rejected": len(unit.rejects)}
    metadata = {
        METADATA_KEY: json.dumps(
            {"file": str(path), "sha256": sha, "rows": [unit.first_row, unit.end]} | counts,
            sort_keys=True,
        )
    }
    contract = ctx.contract
    _commit_rejects(dead, contract, sha, f"file:{sha[:20]}", unit.rejects, ctx.now, metadata)
    commit(
        bronze,
        pa.Table.from_batches([b for t in unit.tables for b in t.to_batches()], schema=ctx.schema),
        transactions={import_app_id(contract, sha): unit.end},
        metadata=metadata,
        writer_properties=bronze_writer_properties(contract),
    )


def _commit_rejects(
    dead: Any,
    contract: str,
    sha: str,
    source_id: str,
    rejects: list[tuple[int, bytes, str]],
    now: datetime,
    metadata: dict[str, str],
) -> None:
    app_id = import_dead_letter_app_id(contract, sha)
    skip_below = recorded_versions(dead, [app_id]).get(app_id, -1)
    rows = [r for r in rejects if r[0] >= skip_below]
    if not rows:
        return
    # Built with polars: pyarrow's pa.array(list) probes for pandas, importing it (~5 s here)
    table = (
        pl.DataFrame(
            {
                "topic": [source_id] * len(rows),
                "partition": pl.Series([0] * len(rows), dtype=pl.Int32),
                "offset": pl.Series([r[0] for r in rows], dtype=pl.Int64),
                "raw_payload": pl.Series([r[1] for r in rows], dtype=pl.Binary),
                "reason": [r[2] for r in rows],
                "rejected_at": pl.Series([now] * len(rows), dtype=pl.Datetime("us", "UTC")),
            }
        )
        .to_arrow()
        .cast(DEAD_LETTER_SCHEMA)
    )
    commit(dead, table, transactions={app_id: rows[-1][0] + 1}, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Entry points


def import_files(
    contract: str,
    path: Path,
    mapping: ImportMapping,
    store: DeltaStore,
    *,
    file_format: str | None = None,
    now: datetime | None = None,
    progress: Callable[[str], None] = log.info,
) -> ImportResult:
    """Import the file (or the folder's files) at ``path`` into ``bronze/<contract>``, exactly
    once per file content. See the module docstring."""
    started = time.monotonic()
    ctx = _Context(contract, store, now or datetime.now(UTC), progress, _stream_schema(contract))
    result = ImportResult(contract)
    files = source_files(path, file_format)
    for file, kind in files:  # a mapping error stops the import before anything is written
        mapping.resolve(columns_of(file, kind))
    # Every bronze table dbt reads, so the transform layer runs on imported history alone.
    for topic in TOPICS:
        ensure_bronze_tables(topic, store)
    ensure_profile_tables(store)
    for file, kind in files:
        result.files.append(_import_file(ctx, file, kind, mapping, result))
    result.elapsed_s = time.monotonic() - started
    return result


def mapped_events(
    path: Path, kind: str, mapping: ImportMapping
) -> Iterator[tuple[list[bytes], list[bytes]]]:
    """The file's rows mapped onto the contract, as JSON payloads and Kafka keys, per chunk."""
    contract = mapping.contract
    columns, constants = mapping.resolve(columns_of(path, kind))
    times = [f.name for f in EVENT_FIELDS[contract] if f.kind == "ts"]
    for batch in batches(path, kind, sorted(set(columns.values())), 0, BATCH_ROWS):
        rows = mapped_frame(batch, contract, columns, constants).with_columns(
            pl.col(t).dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ") for t in times
        )
        payloads = rows.select(
            pl.struct(pl.lit(SCHEMA_VERSION).alias("schema_version"), pl.all())
            .struct.json_encode()
            .alias("payload")
        )["payload"]
        keys = rows[KEY_FIELD[contract]].fill_null("")
        yield [p.encode() for p in payloads], [k.encode() for k in keys]
