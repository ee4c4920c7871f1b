"""Account profiles: the PostgreSQL source table, its contract, and keyset reads of it.

Source contract (``ensure_schema`` creates it; real deployments own it)::

    account_profiles(
        user_id      text primary key,
        signup_time  timestamptz not null,
        kyc_level    smallint not null check (kyc_level between 0 and 3),
        home_country char(2) not null check (home_country ~ '^[A-Z]{2}$'),
        account_type text not null check (account_type in ACCOUNT_TYPES),
        updated_at   timestamptz not null default clock_timestamp()
    ) + index (updated_at, user_id) + a trigger stamping updated_at on every update

Reading: keyset pagination on ``(updated_at, user_id)``: a page is the rows strictly after the
watermark (the key of the last row read), ordered by that key, ``batch_size`` at a time. Rows
sharing an ``updated_at`` are ordered by ``user_id``, so a page boundary inside a tie never loses
or repeats a row. Each read is bounded by a *horizon*: the oldest start of a transaction that has
written to the database and not committed yet (``pg_stat_activity.backend_xid``), else the clock.
A row stamped before the horizon but committed after it would otherwise appear behind the
watermark and be skipped forever. That holds when ``updated_at`` is the time of the write (the
trigger and the column default use ``clock_timestamp()``); writers that back-date ``updated_at``
while others ingest are not covered. Seeing other sessions' ``backend_xid`` needs superuser or
``pg_read_all_stats``.

Rows with a null ``user_id`` (only possible without the primary key) are read and rejected; nulls
sort first inside a tie, and a page never ends inside a run of null-``user_id`` rows of one
``updated_at``. Rows with a null ``updated_at`` cannot be ordered: they are counted as
``unreadable`` (the freshness check fails on them), never read.

The bronze side (Delta commits, watermark in the log) is ``profiles.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

SOURCE_TABLE = "account_profiles"
KYC_LEVELS = (0, 1, 2, 3)
ACCOUNT_TYPES = ("personal", "business", "premium")
COLUMNS = ("user_id", "signup_time", "kyc_level", "home_country", "account_type", "updated_at")
_COUNTRY = re.compile(r"^[A-Z]{2}$")

# (updated_at, user_id) of the last row read; user_id None only for contract-breaking rows.
Watermark = tuple[datetime, str | None]


class ProfilesSourceError(RuntimeError):
    """The PostgreSQL profiles source cannot be read."""


class PostgresUnreachable(ProfilesSourceError):
    """No connection to PostgreSQL."""


@dataclass(frozen=True)
class Profile:
    """One account profile as the simulator (or an application) writes it."""

    user_id: str
    signup_time: datetime
    kyc_level: int
    home_country: str
    account_type: str


# --------------------------------------------------------------------------------------------
# PostgreSQL


def redact_url(url: str) -> str:
    """``url`` without its password (URL form ``postgresql://u:pw@h/db`` or ``password=pw``)."""
    url = re.sub(r"(password\s*=\s*)(\S+)", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def connect(pg_url: str, timeout_s: int = 5) -> psycopg2.extensions.connection:
    """A psycopg2 connection; raises ``PostgresUnreachable`` (password stripped) if it fails."""
    try:
        return psycopg2.connect(pg_url, connect_timeout=timeout_s)
    except psycopg2.Error as exc:
        message = " ".join(str(exc).split()).replace(pg_url, redact_url(pg_url))
        raise PostgresUnreachable(
            f"PostgreSQL not reachable at {redact_url(pg_url)}: {message}"
        ) from None


@contextmanager
def connection(pg_url: str, timeout_s: int = 5) -> Iterator[psycopg2.extensions.connection]:
    conn = connect(pg_url, timeout_s)
    try:
        yield conn
    finally:
        conn.close()


_DDL = f"""
CREATE TABLE IF NOT EXISTS {SOURCE_TABLE} (
    user_id      text PRIMARY KEY,
    signup_time  timestamptz NOT NULL,
    kyc_level    smallint NOT NULL CHECK (kyc_level BETWEEN 0 AND 3),
    home_country char(2) NOT NULL CHECK (home_country ~ '^[A-Z]{{2}}$'),
    account_type text NOT NULL CHECK (account_type IN ({", ".join(f"'{t}'" for t in ACCOUNT_TYPES)})),
    updated_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS {SOURCE_TABLE}_updated_at_user_id_idx
    ON {SOURCE_TABLE} (updated_at, user_id);
CREATE OR REPLACE FUNCTION {SOURCE_TABLE}_stamp_updated_at() RETURNS trigger AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := clock_timestamp();
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER {SOURCE_TABLE}_stamp_updated_at
    BEFORE UPDATE ON {SOURCE_TABLE}
    FOR EACH ROW EXECUTE FUNCTION {SOURCE_TABLE}_stamp_updated_at();
"""


def ensure_schema(conn: psycopg2.extensions.connection) -> None:
    """Create the source table, its index and its ``updated_at`` trigger if missing (idempotent,
    serialized by an advisory lock so concurrent callers do not collide)."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"fraud_platform.{SOURCE_TABLE}",)
        )
        cur.execute(_DDL)


def create_table_if_missing(pg_url: str) -> bool:
    """``ensure_schema`` when the source table does not exist yet; True if it created it.

    For deployments where the platform owns the table (the simulator seeds it): an empty source
    is then a valid state instead of an error.
    """
    with connection(pg_url) as conn:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s) IS NULL", (SOURCE_TABLE,))
            missing = cur.fetchone()[0]
        if missing:
            ensure_schema(conn)
        return bool(missing)


def seed_profiles(
    conn: psycopg2.extensions.connection,
    users: Iterable[Profile],
    now: datetime | None = None,
) -> int:
    """Upsert profiles; returns how many rows were inserted or actually changed.

    ``updated_at`` is set to ``now`` (default: the database clock) on new and changed rows only,
    so seeding the same profiles again changes nothing and the next ingestion appends nothing.
    """
    rows = [(p.user_id, p.signup_time, p.kyc_level, p.home_country, p.account_type) for p in users]
    if not rows:
        return 0
    changed = 0
    with conn, conn.cursor() as cur:
        stamp = cur.mogrify("coalesce(%s::timestamptz, clock_timestamp())", (now,)).decode()
        sql = f"""
            INSERT INTO {SOURCE_TABLE} AS t
                (user_id, signup_time, kyc_level, home_country, account_type, updated_at)
            SELECT v.user_id, v.signup_time::timestamptz, v.kyc_level::smallint, v.home_country,
                   v.account_type, {stamp.replace("%", "%%")}
            FROM (VALUES %s) AS v(user_id, signup_time, kyc_level, home_country, account_type)
            ON CONFLICT (user_id) DO UPDATE SET
                signup_time = excluded.signup_time,
                kyc_level = excluded.kyc_level,
                home_country = excluded.home_country,
                account_type = excluded.account_type,
                updated_at = excluded.updated_at
            WHERE (t.signup_time, t.kyc_level, t.home_country, t.account_type)
                IS DISTINCT FROM
                (excluded.signup_time, excluded.kyc_level, excluded.home_country,
                 excluded.account_type)
        """
        for start in range(0, len(rows), 5000):
            chunk = rows[start : start + 5000]
            psycopg2.extras.execute_values(cur, sql, chunk, page_size=len(chunk))
            changed += cur.rowcount
    return changed


def after_clause(after: Watermark | None) -> tuple[str, list[Any]]:
    """SQL condition (and its parameters) selecting the rows after the watermark ``after``."""
    if after is None:
        return "TRUE", []
    updated_at, user_id = after
    if user_id is None:  # nulls sort first inside a tie: everything non-null of that tie is after
        return "(updated_at > %s OR (updated_at = %s AND user_id IS NOT NULL))", [
            updated_at,
            updated_at,
        ]
    return "(updated_at, user_id) > (%s, %s)", [updated_at, user_id]


def execute_on_source(cur: Any, sql: str, params: list[Any]) -> None:
    try:
        cur.execute(sql, params)
    except psycopg2.errors.UndefinedTable:
        raise ProfilesSourceError(
            f"table {SOURCE_TABLE!r} not found in {redact_url(cur.connection.dsn)}: seed it "
            "(`fraud-platform simulate`, or lib.ingestion.profiles_source.ensure_schema + seed_profiles)"
        ) from None
    except psycopg2.errors.UndefinedColumn as exc:
        raise ProfilesSourceError(
            f"table {SOURCE_TABLE!r} does not match the contract ({', '.join(COLUMNS)}): "
            f"{str(exc).strip()}"
        ) from None


def horizon(conn: psycopg2.extensions.connection) -> datetime:
    """Rows stamped before this are committed or belong to no running writer (module doc)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_xid IS NOT NULL"
        )
        return cur.fetchone()[0]


def read_increment(
    conn: psycopg2.extensions.connection,
    after: Watermark | None,
    limit: int,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """The next ``limit`` rows after the watermark ``after`` in ``(updated_at, user_id)`` order
    (nulls first), stamped before ``until`` if given. Never ends inside a run of
    null-``user_id`` rows sharing one ``updated_at``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    clause, params = after_clause(after)
    bound = ""
    if until is not None:
        bound = "AND updated_at < %s"
        params.append(until)
    order = "ORDER BY updated_at, user_id NULLS FIRST"
    columns = ", ".join(COLUMNS)
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        execute_on_source(
            cur,
            f"SELECT {columns} FROM {SOURCE_TABLE} WHERE updated_at IS NOT NULL AND {clause} "
            f"{bound} {order} LIMIT %s",
            [*params, limit],
        )
        rows = [dict(r) for r in cur.fetchall()]
        if len(rows) == limit and rows[-1]["user_id"] is None:
            last = rows[-1]["updated_at"]
            execute_on_source(
                cur,
                f"SELECT {columns} FROM {SOURCE_TABLE} WHERE updated_at = %s AND user_id IS NULL",
                [last],
            )
            tied = [dict(r) for r in cur.fetchall()]
            rows = [r for r in rows if r["updated_at"] != last] + tied
    return rows


# --------------------------------------------------------------------------------------------
# Contract


def reject_reason(row: dict[str, Any]) -> str | None:
    """Why ``row`` breaks the contract, or None."""
    user_id = row.get("user_id")
    if user_id is None or not isinstance(user_id, str) or not user_id.strip():
        return "user_id is null or empty"
    for column in ("signup_time", "updated_at"):
        value = row.get(column)
        if value is None:
            return f"{column} is null"
        if not isinstance(value, datetime) or value.tzinfo is None:
            return f"{column} {value!r} is not a timestamp with time zone"
    kyc = row.get("kyc_level")
    if kyc is None:
        return "kyc_level is null"
    if isinstance(kyc, bool) or not isinstance(kyc, int) or kyc not in KYC_LEVELS:
        return f"kyc_level {kyc!r} is outside {KYC_LEVELS[0]}..{KYC_LEVELS[-1]}"
    country = row.get("home_country")
    if not isinstance(country, str) or not _COUNTRY.match(country):
        return f"home_country {country!r} is not an ISO 3166-1 alpha-2 code"
    account_type = row.get("account_type")
    if account_type not in ACCOUNT_TYPES:
        return f"unknown account_type {account_type!r} (expected one of {', '.join(ACCOUNT_TYPES)})"
    return None
