"""Import a team's own history (Parquet or CSV files) straight into the bronze Delta tables.

The same contract, validation, dead letters and exactly-once guarantee as Kafka ingestion
(``bronze.py``), with the file in the role of a Kafka partition:

* A file's identity is the SHA-256 of its content; a row's is its index in the file. Bronze rows
  carry ``_topic = "file:<sha256[:20]>"``, ``_partition = 0``, ``_offset = row index``.
* Rows are imported in chunks; each chunk is ONE append commit to the bronze table carrying the
  Delta application transaction ``fraud_platform.import.<topic>.<sha256>`` = index of the next
  row. Rejects of the chunk are committed to ``bronze/dead_letter`` first, under
  ``fraud_platform.import_dead_letter.<topic>.<sha256>`` (rows below it are not written again),
  exactly as for Kafka. A re-import of the same file (any name, any folder) starts at the
  recorded row: it adds nothing; a crash mid-file resumes after the last committed chunk.
* Validation is columnar (polars expressions of the contract's checks); a row failing any of
  them goes through the reference ``validate_record``, which decides and words the reason, so
  accepted rows and reasons are those of Kafka ingestion. The dead letter's ``raw_payload`` is the
  mapped row as JSON.

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

from fraud_platform.lib.contracts.events import (
    CONTROL_CHARACTERS,
    DEAD_LETTER_SCHEMA,
    EARLIEST_EVENT_TIME,
    EVENT_DATE_COLUMN,
    EVENT_FIELDS,
    EVENT_TIME_FIELD,
    KEY_FIELD,
    MAX_FUTURE_SKEW,
    MAX_STRING_CHARS,
    SCHEMA_VERSION,
    TOPICS,
    TRANSACTIONS,
    RejectedEvent,
    bronze_schema,
    format_timestamp,
    validate_record,
)
from fraud_platform.lib.ingestion.bronze import ensure_bronze_tables
from fraud_platform.lib.ingestion.import_mapping import ImportMapping, mapped_frame
from fraud_platform.lib.ingestion.import_sources import (
    chunks,
    columns_of,
    file_sha256,
    row_count,
    source_files,
)
from fraud_platform.lib.ingestion.profiles import ensure_bronze_tables as ensure_profile_tables
from fraud_platform.lib.storage.delta import DeltaStore, commit, recorded_versions

log = logging.getLogger(__name__)

CHUNK_ROWS = 2_000_000  # rows per Delta commit (and in memory at once for Parquet)
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
# Mapping and validation (columnar)


def _valid(
    contract: str, constants: dict[str, Any], now: datetime, from_integers: set[str]
) -> pl.Expr:
    """True for the rows passing every contract check (constants were checked once; a string
    field read from an integer column holds digits only, so it passes every string check)."""
    checks: list[pl.Expr] = []
    earliest = EARLIEST_EVENT_TIME
    latest = now + MAX_FUTURE_SKEW
    for spec in EVENT_FIELDS[contract]:
        column = pl.col(spec.name)
        if spec.name in constants:
            continue
        if spec.kind == "str" and spec.name in from_integers and spec.choices is None:
            good = column.is_not_null()
        elif spec.kind == "str":
            good = (
                (column.str.len_chars() <= MAX_STRING_CHARS)
                & column.str.contains("[!-~]")
                & ~column.str.contains(f"[{CONTROL_CHARACTERS}]")
            )
            if spec.choices is not None:
                good = good & column.is_in(sorted(spec.choices))
        elif spec.kind == "float":
            good = column.is_finite() & (column > 0 if spec.positive else pl.lit(True))
            if spec.limits is not None:
                good = good & column.is_between(*spec.limits)
        elif spec.kind == "ts":
            good = column.is_between(pl.lit(earliest), pl.lit(latest))
        else:
            good = column.is_not_null()
        checks.append(good.fill_null(False) if spec.required else column.is_null() | good)
    if contract == TRANSACTIONS and "channel" not in constants:
        checks.append((pl.col("channel") != "p2p") | pl.col("counterparty_id").is_not_null())
    elif contract == TRANSACTIONS and constants["channel"] == "p2p":
        checks.append(pl.col("counterparty_id").is_not_null())
    return pl.all_horizontal(checks).fill_null(False) if checks else pl.lit(True)


def _reference_record(row: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """A failing row as the event a producer would have sent: converted values, and the source
    text where a value did not convert (so the reason names what the file holds)."""
    event: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for name, value in row.items():
        if value is None and raw.get(name) is not None:
            value = str(raw[name])
        event[name] = format_timestamp(value) if isinstance(value, datetime) else value
    return event


# --------------------------------------------------------------------------------------------
# One file


@dataclass
class _Context:
    contract: str
    store: DeltaStore
    now: datetime
    progress: Callable[[str], None]


def _import_file(
    ctx: _Context, path: Path, kind: str, mapping: ImportMapping, result: ImportResult
) -> FileResult:
    sha = file_sha256(path)
    columns, constants = mapping.resolve(columns_of(path, kind))
    bronze, dead = ensure_bronze_tables(ctx.contract, ctx.store)
    app_id = import_app_id(ctx.contract, sha)
    done = bronze.transaction_version(app_id) or 0
    source_columns = sorted(set(columns.values()))
    total = row_count(path, kind)
    file_result = FileResult(str(path), sha, total, already_imported=done)
    if done >= total:
        ctx.progress(f"{path.name}: already imported ({total:,} rows, sha256 {sha[:12]})")
        return file_result
    started = time.monotonic()
    position = done
    for chunk in chunks(path, kind, source_columns, done, CHUNK_ROWS):
        accepted, rejected, dates = _import_chunk(
            ctx, bronze, dead, chunk, position, sha, columns, constants, path
        )
        position += chunk.height
        file_result.accepted += accepted
        file_result.rejected += rejected
        if dates is not None:
            old = result.event_dates or dates
            result.event_dates = (min(old[0], dates[0]), max(old[1], dates[1]))
        rate = (position - done) / max(time.monotonic() - started, 1e-9)
        ctx.progress(
            f"{path.name}: {position:,}/{total:,} rows, +{file_result.accepted:,} accepted, "
            f"{file_result.rejected:,} dead letters ({rate:,.0f} rows/s)"
        )
    return file_result


def _import_chunk(
    ctx: _Context,
    bronze: Any,
    dead: Any,
    chunk: pl.DataFrame,
    first_row: int,
    sha: str,
    columns: dict[str, str],
    constants: dict[str, Any],
    path: Path,
) -> tuple[int, int, tuple[date, date] | None]:
    contract = ctx.contract
    source_id = f"file:{sha[:20]}"
    from_integers = {f for f, c in columns.items() if chunk.schema[c].is_integer()}
    rows = mapped_frame(chunk, contract, columns, constants).with_columns(
        pl.int_range(first_row, first_row + chunk.height, dtype=pl.Int64).alias("_offset"),
        _valid(contract, constants, ctx.now, from_integers).alias("__ok"),
    )
    good = rows.filter(pl.col("__ok"))
    failing = rows.filter(~pl.col("__ok"))
    extra: list[dict[str, Any]] = []
    rejects: list[tuple[int, bytes, str]] = []
    if failing.height:
        raw = chunk.with_row_index("__i").filter(~rows["__ok"])
        renamed = {column: field for field, column in columns.items()}
        for row, source in zip(failing.drop("__ok").to_dicts(), raw.to_dicts(), strict=True):
            offset = row.pop("_offset")
            event = _reference_record(row, {renamed.get(k, k): v for k, v in source.items()})
            payload = json.dumps(event, default=str).encode()
            try:
                record = validate_record(contract, event, ctx.now)
            except RejectedEvent as exc:
                rejects.append((offset, payload, str(exc)))
                continue
            extra.append({**record, "_offset": offset})
    event_time = EVENT_TIME_FIELD[contract]
    schema = bronze_schema(contract)
    accepted = good.drop("__ok")
    if extra:
        accepted = pl.concat(
            [accepted, pl.DataFrame(extra).drop("schema_version").select(accepted.columns)],
            how="vertical_relaxed",
        ).sort("_offset")
    table = accepted.with_columns(
        pl.lit(SCHEMA_VERSION, pl.Int32).alias("schema_version"),
        pl.lit(source_id).alias("_topic"),
        pl.lit(0, pl.Int32).alias("_partition"),
        pl.lit(ctx.now).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.col(event_time).dt.date().alias(EVENT_DATE_COLUMN),
    ).select(schema.names)
    end = first_row + chunk.height
    metadata = {
        METADATA_KEY: json.dumps(
            {"file": str(path), "sha256": sha, "rows": [first_row, end],
             "accepted": table.height, "rejected": len(rejects)},
            sort_keys=True,
        )
    }  # fmt: skip
    _commit_rejects(dead, contract, sha, source_id, rejects, ctx.now, metadata)
    commit(
        bronze,
        # polars' string views as they are (deltalake takes them; a cast to string copies)
        table.to_arrow(compat_level=pl.CompatLevel.newest()),
        transactions={import_app_id(contract, sha): end},
        metadata=metadata,
    )
    dates = None
    if table.height:
        dates = (table[EVENT_DATE_COLUMN].min(), table[EVENT_DATE_COLUMN].max())
    return table.height, len(rejects), dates  # type: ignore[return-value]


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
    ctx = _Context(contract, store, now or datetime.now(UTC), progress)
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
    for chunk in chunks(path, kind, sorted(set(columns.values())), 0, CHUNK_ROWS):
        rows = mapped_frame(chunk, contract, columns, constants).with_columns(
            pl.col(t).dt.strftime("%Y-%m-%dT%H:%M:%S.%6fZ") for t in times
        )
        payloads = rows.select(
            pl.struct(pl.lit(SCHEMA_VERSION).alias("schema_version"), pl.all())
            .struct.json_encode()
            .alias("payload")
        )["payload"]
        keys = rows[KEY_FIELD[contract]].fill_null("")
        yield [p.encode() for p in payloads], [k.encode() for k in keys]
