"""Account profiles: the PostgreSQL source (``profiles_source.py``) read into bronze Delta,
exactly once.

Writing: every page is ONE append commit to ``bronze/account_profiles`` carrying
the Delta application transaction ``APP_ID`` (version = page sequence number 1, 2, ...) and, in
its commit metadata (``METADATA_KEY``), the new watermark. Rows and watermark become visible
together; the Delta log is the only place the watermark lives. Rows breaking the contract (the
source may lack the constraints) go to ``bronze/account_profiles_rejected`` with the reason,
committed BEFORE the bronze commit of the page, with ``REJECTED_APP_ID`` = the page's sequence
number; a re-run after a crash between the two commits rereads the page and skips the rejects
the rejected table already holds for that sequence number. A crash before the bronze commit
therefore repeats nothing, a crash after it finds the watermark in the log. Two concurrent
ingestions commit the same application id on the same snapshot: one fails with a Delta conflict.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from fraud_platform import names
from fraud_platform.lib.contracts.events import TS
from fraud_platform.lib.ingestion.profiles_source import (
    SOURCE_TABLE,
    Watermark,
    after_clause,
    connection,
    execute_on_source,
    horizon,
    read_increment,
    redact_url,
    reject_reason,
)
from fraud_platform.lib.storage.delta import DeltaStore, commit

log = logging.getLogger(__name__)

BRONZE_TABLE = names.PROFILES_TABLE
REJECTED_TABLE = names.PROFILES_REJECTED_TABLE
APP_ID = "fraud_platform.bronze.account_profiles"
REJECTED_APP_ID = "fraud_platform.bronze.account_profiles_rejected"
METADATA_KEY = "fraud_platform.profiles"

BRONZE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("signup_time", TS, nullable=False),
        pa.field("kyc_level", pa.int16(), nullable=False),
        pa.field("home_country", pa.string(), nullable=False),
        pa.field("account_type", pa.string(), nullable=False),
        pa.field("updated_at", TS, nullable=False),
        pa.field("_batch", pa.int64(), nullable=False),
        pa.field("_ingested_at", TS, nullable=False),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string()),
        pa.field("updated_at", TS, nullable=False),
        pa.field("raw_row", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("_batch", pa.int64(), nullable=False),
        pa.field("rejected_at", TS, nullable=False),
    ]
)


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _bronze_table(rows: list[dict[str, Any]], batch: int, now: datetime) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "user_id": r["user_id"],
                "signup_time": _utc(r["signup_time"]),
                "kyc_level": r["kyc_level"],
                "home_country": r["home_country"],
                "account_type": r["account_type"],
                "updated_at": _utc(r["updated_at"]),
                "_batch": batch,
                "_ingested_at": now,
            }
            for r in rows
        ],
        schema=BRONZE_SCHEMA,
    )


def _rejected_table(
    rejects: list[tuple[dict[str, Any], str]], batch: int, now: datetime
) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "user_id": row["user_id"] if isinstance(row["user_id"], str) else None,
                "updated_at": _utc(row["updated_at"]),
                "raw_row": json.dumps(row, default=str, sort_keys=True),
                "reason": reason,
                "_batch": batch,
                "rejected_at": now,
            }
            for row, reason in rejects
        ],
        schema=REJECTED_SCHEMA,
    )


# --------------------------------------------------------------------------------------------
# Delta state


def _encode(mark: Watermark | None) -> list[str | None] | None:
    return None if mark is None else [_utc(mark[0]).isoformat(), mark[1]]


def _decode(value: list[str | None] | None) -> Watermark | None:
    return None if value is None else (datetime.fromisoformat(value[0]), value[1])


def _watermark_from_data(bronze: DeltaTable, store: DeltaStore) -> Watermark | None:
    """Fallback when the log's commit info was cleaned up: the largest key of both tables."""
    frames = [pl.from_arrow(bronze.to_pyarrow_table(columns=["updated_at", "user_id"]))]
    if store.exists(REJECTED_TABLE):
        rejected = store.open(REJECTED_TABLE)
        frames.append(pl.from_arrow(rejected.to_pyarrow_table(columns=["updated_at", "user_id"])))
    keys = pl.concat(frames).sort(["updated_at", "user_id"], nulls_last=False)
    if keys.is_empty():
        return None
    last = keys.row(-1)
    return (last[0], last[1])


def read_state(bronze: DeltaTable, store: DeltaStore) -> tuple[int, Watermark | None]:
    """``(page sequence number, watermark)`` recorded in the bronze table's Delta log."""
    sequence = bronze.transaction_version(APP_ID)
    if sequence is None:
        return 0, None
    for limit in (20, None):
        for entry in bronze.history(limit):
            raw = entry.get(METADATA_KEY)
            if raw is None:
                continue
            info = json.loads(raw)
            if info.get("batch") == sequence:
                return sequence, _decode(info["watermark_after"])
    log.warning(
        "commit info of profiles page %s not in the Delta log: watermark from data", sequence
    )
    return sequence, _watermark_from_data(bronze, store)


def bronze_watermark(store: DeltaStore) -> Watermark | None:
    """The watermark of the bronze table (None: nothing ingested yet, or no table)."""
    if not store.exists(BRONZE_TABLE):
        return None
    return read_state(store.open(BRONZE_TABLE), store)[1]


# --------------------------------------------------------------------------------------------
# Committing one page


def _commit_rejects(
    rejected: DeltaTable, rejects: list[tuple[dict[str, Any], str]], batch: int, now: datetime
) -> int:
    """Append the rejects of page ``batch`` not already there (crash re-run); returns count."""
    table = _rejected_table(rejects, batch, now)
    written = rejected.transaction_version(REJECTED_APP_ID)
    if written is not None and written >= batch:
        existing = pl.from_arrow(
            rejected.to_pyarrow_table(
                columns=["user_id", "updated_at", "reason"], filters=[("_batch", "=", batch)]
            )
        )
        seen = set(existing.iter_rows())
        keep = [
            i
            for i, key in enumerate(
                zip(
                    table.column("user_id").to_pylist(),
                    table.column("updated_at").to_pylist(),
                    table.column("reason").to_pylist(),
                    strict=True,
                )
            )
            if key not in seen
        ]
        table = table.take(pa.array(keep, pa.int64()))
    if table.num_rows == 0:
        return 0
    metadata = {METADATA_KEY: json.dumps({"batch": batch})}
    commit(rejected, table, transactions={REJECTED_APP_ID: batch}, metadata=metadata)
    return table.num_rows


def _commit_bronze(bronze: DeltaTable, table: pa.Table, batch: int, info: dict[str, Any]) -> int:
    metadata = {METADATA_KEY: json.dumps(info, sort_keys=True)}
    return commit(bronze, table, transactions={APP_ID: batch}, metadata=metadata)


# --------------------------------------------------------------------------------------------
# Entry points


@dataclass
class ProfilesIngestResult:
    accepted: int
    rejected: int
    pages: int
    watermark_before: Watermark | None
    watermark_after: Watermark | None
    delta_version: int | None
    elapsed_s: float
    source: str

    def watermark_text(self) -> str:
        mark = self.watermark_after
        return "none" if mark is None else f"{_utc(mark[0]).isoformat()} / {mark[1]}"


def ingest_profiles(
    pg_url: str,
    store: DeltaStore,
    batch_size: int = 10_000,
    *,
    now: datetime | None = None,
    max_pages: int | None = None,
) -> ProfilesIngestResult:
    """Append the profile rows changed since the bronze watermark, ``batch_size`` per commit,
    exactly once (module doc). Stops at the horizon taken at the start, or after ``max_pages``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.monotonic()
    now = now or datetime.now(UTC)
    source = f"{redact_url(pg_url)} table {SOURCE_TABLE}"
    with connection(pg_url) as conn:
        conn.set_session(readonly=True, autocommit=True)
        until = horizon(conn)
        bronze, rejected = ensure_bronze_tables(store)
        sequence, mark = read_state(bronze, store)
        before = mark
        accepted = rejected_count = pages = 0
        version: int | None = bronze.version()
        while max_pages is None or pages < max_pages:
            rows = read_increment(conn, mark, batch_size, until)
            if not rows:
                break
            sequence += 1
            good, bad = [], []
            for row in rows:
                reason = reject_reason(row)
                if reason is None:
                    good.append(row)
                else:
                    bad.append((row, reason))
            new_mark: Watermark = (rows[-1]["updated_at"], rows[-1]["user_id"])
            info = {
                "batch": sequence,
                "watermark_before": _encode(mark),
                "watermark_after": _encode(new_mark),
                "accepted": len(good),
                "rejected": len(bad),
                "source": source,
            }
            if bad:
                rejected_count += _commit_rejects(rejected, bad, sequence, now)
            version = _commit_bronze(bronze, _bronze_table(good, sequence, now), sequence, info)
            accepted += len(good)
            pages += 1
            mark = new_mark
            if len(rows) < batch_size:
                break
    return ProfilesIngestResult(
        accepted=accepted,
        rejected=rejected_count,
        pages=pages,
        watermark_before=before,
        watermark_after=mark,
        delta_version=version,
        elapsed_s=time.monotonic() - started,
        source=source,
    )


@dataclass
class ProfilesFreshness:
    pg_newest: datetime | None
    bronze_newest: datetime | None
    pending: int  # rows after the bronze watermark
    unreadable: int  # rows with a null updated_at

    @property
    def lag_s(self) -> float:
        if self.pg_newest is None:
            return 0.0
        if self.bronze_newest is None:
            return float("inf")
        return max(0.0, (self.pg_newest - self.bronze_newest).total_seconds())


def profiles_freshness(pg_url: str, store: DeltaStore) -> ProfilesFreshness:
    """Compare the newest ``updated_at`` in PostgreSQL with the bronze watermark."""
    mark = bronze_watermark(store)
    clause, params = after_clause(mark)
    with connection(pg_url) as conn:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            execute_on_source(
                cur,
                f"SELECT max(updated_at), count(*) FILTER (WHERE updated_at IS NOT NULL AND "
                f"{clause}), count(*) FILTER (WHERE updated_at IS NULL) FROM {SOURCE_TABLE}",
                params,
            )
            newest, pending, unreadable = cur.fetchone()
    return ProfilesFreshness(
        pg_newest=newest,
        bronze_newest=None if mark is None else mark[0],
        pending=int(pending),
        unreadable=int(unreadable),
    )


def ensure_bronze_tables(store: DeltaStore) -> tuple[DeltaTable, DeltaTable]:
    """Open the bronze profiles table and its rejected table, creating them empty if missing:
    dbt reads the bronze table even when PostgreSQL was never reachable (no profile features)."""
    return (
        store.open_or_create(BRONZE_TABLE, BRONZE_SCHEMA),
        store.open_or_create(REJECTED_TABLE, REJECTED_SCHEMA),
    )
