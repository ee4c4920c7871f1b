"""Columnar validation of a batch of raw Kafka values, equivalent to ``validate_event`` per event.

``validate_batch`` parses the payloads of a batch together (``pyarrow.json`` on the payloads
joined as NDJSON, with an explicit schema: a value of the wrong JSON type, a duplicate key or a
non-JSON payload makes the parse fail) and expresses every contract check as column
expressions. Only rows passing ALL checks on this fast path are accepted from it; anything else
goes through the reference ``validate_event``, which decides (and words the reject reason):

* payloads the fast path does not try: null, empty, oversized, not starting with ``{``, holding
  a line break (NDJSON framing) or a ``\\u`` escape (lone surrogates);
* every row of a piece that fails to parse or parses to a different number of rows (the piece
  is split in halves until the failing rows are isolated);
* rows failing any column check (missing/empty/unknown values, strings that are too long, hold a
  control character or no visible ASCII character, amounts out of bounds, ``schema_version`` != 1, timestamps not in the strict form
  ``YYYY-MM-DDTHH:MM:SS[.ffffff](Z|+HH:MM)`` or not a real date, times before the earliest or in
  the future, p2p without a counterparty).

So the accepted rows and the reject reasons are exactly those of ``validate_event``; the fast
path only decides what is certainly valid, faster. Contracts with ``json`` fields (the
``scores`` topic) have no fast path: every event goes through ``validate_event``.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from fraud_platform.lib.contracts.events import (
    CONTROL_CHARACTERS,
    EARLIEST_EVENT_TIME,
    EVENT_FIELDS,
    EVENT_TIME_FIELD,
    MAX_FUTURE_SKEW,
    MAX_PAYLOAD_BYTES,
    MAX_STRING_CHARS,
    SCHEMA_VERSION,
    TRANSACTIONS,
    RejectedEvent,
    bronze_schema,
    validate_event,
)

_LEAF = 32  # pieces this small that fail to parse go to the per-event path directly
_TS_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-5][0-9](\.[0-9]{6})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.f%:z"
_READ = pj.ReadOptions(block_size=1 << 20)
_MIN_TS = datetime(2, 1, 1)  # keep clear of the ends of Python's datetime range
_MAX_TS = datetime(9998, 1, 1)
_EARLIEST = EARLIEST_EVENT_TIME.replace(tzinfo=None)
# Certainly not blank: a printable ASCII character other than space (other strings, e.g. only
# Unicode spaces, go to the per-event path, which decides with ``str.strip``).
_VISIBLE = "[!-~]"
_CONTROL = f"[{CONTROL_CHARACTERS}]"


def record_schema(contract: str) -> pa.Schema:
    """Schema of validated records: ``schema_version`` then the contract fields (bronze types)."""
    schema = bronze_schema(contract)
    names = ["schema_version"] + [f.name for f in EVENT_FIELDS[contract]]
    return pa.schema([schema.field(name) for name in names])


def _parse_schema(contract: str) -> pa.Schema:
    kinds = {"str": pa.string(), "float": pa.float64(), "bool": pa.bool_(), "ts": pa.string()}
    fields = [pa.field("schema_version", pa.int64())]
    fields += [pa.field(f.name, kinds[f.kind]) for f in EVENT_FIELDS[contract] if f.kind in kinds]
    return pa.schema(fields)


def _parse(
    payloads: list[bytes], first: bytes | None, options: pj.ParseOptions
) -> tuple[list[tuple[int, int, pa.Table]], list[int]]:
    """Parse ``payloads`` (no line breaks inside): pieces ``(start, stop, table)`` in order and
    the positions left to the per-event path. ``first`` is the NDJSON of all, if already joined.
    """
    pieces: list[tuple[int, int, pa.Table]] = []
    slow: list[int] = []
    stack = [(0, len(payloads))]
    while stack:
        start, stop = stack.pop()
        if start == stop:
            continue
        if first is not None:
            data, first = first, None
        else:
            data = b"\n".join(payloads[start:stop])
        try:
            table = pj.read_json(io.BytesIO(data), read_options=_READ, parse_options=options)
        except (pa.ArrowInvalid, UnicodeDecodeError):
            table = None
        if table is not None and table.num_rows == stop - start:
            pieces.append((start, stop, table))
        elif stop - start <= _LEAF:
            slow.extend(range(start, stop))
        else:
            middle = (start + stop) // 2
            stack.append((middle, stop))  # popped second: pieces stay in order
            stack.append((start, middle))
    return pieces, slow


def _checks(contract: str, table: pa.Table, now: datetime) -> tuple[pa.Array, pa.Table]:
    """Mask of the rows passing every contract check, and the table with typed timestamps."""
    ok = pc.fill_null(pc.equal(table.column("schema_version"), SCHEMA_VERSION), False)
    columns: dict[str, pa.ChunkedArray] = {}
    limit = (now + MAX_FUTURE_SKEW).astimezone(UTC).replace(tzinfo=None)
    for spec in EVENT_FIELDS[contract]:
        column = table.column(spec.name)
        valid = pc.is_valid(column)
        if spec.kind == "str":
            good = pc.and_(
                pc.and_(
                    pc.less_equal(pc.utf8_length(column), MAX_STRING_CHARS),
                    pc.match_substring_regex(column, _VISIBLE),
                ),
                pc.invert(pc.match_substring_regex(column, _CONTROL)),
            )
            if spec.choices is not None:
                good = pc.and_(good, pc.is_in(column, pa.array(sorted(spec.choices))))
        elif spec.kind == "float":
            good = pc.is_finite(column)
            if spec.positive:
                good = pc.and_(good, pc.greater(column, 0.0))
            if spec.limits is not None:
                low, high = spec.limits
                good = pc.and_(
                    good,
                    pc.and_(pc.greater_equal(column, low), pc.less_equal(column, high)),
                )
        elif spec.kind == "bool":
            good = valid
        else:
            strict = pl.from_arrow(column).str.contains(_TS_PATTERN)
            parsed = (
                pl.from_arrow(column)
                .str.replace(r"Z$", "+00:00")
                .str.to_datetime(format=_TS_FORMAT, strict=False, time_unit="us", time_zone="UTC")
            )
            naive = parsed.dt.replace_time_zone(None)
            in_range = (naive >= _MIN_TS) & (naive < _MAX_TS)
            good_series = strict & parsed.is_not_null() & in_range
            if spec.name == EVENT_TIME_FIELD[contract]:
                good_series = good_series & (naive <= limit) & (naive >= _EARLIEST)
            good = good_series.fill_null(False).to_arrow()
            column = parsed.to_arrow()
        good = pc.fill_null(good, False)
        if spec.required:
            ok = pc.and_(ok, pc.and_(valid, good))
        else:
            ok = pc.and_(ok, pc.or_(pc.invert(valid), good))
        columns[spec.name] = column
    if contract == TRANSACTIONS:
        # counterparty_id, when present, is a non-empty string (checked above)
        p2p = pc.fill_null(pc.equal(table.column("channel"), "p2p"), False)
        has_counterparty = pc.is_valid(table.column("counterparty_id"))
        ok = pc.and_(ok, pc.or_(pc.invert(p2p), has_counterparty))
    typed = pa.table(
        {"schema_version": pa.repeat(pa.scalar(SCHEMA_VERSION, pa.int32()), table.num_rows)}
        | columns
    )
    return ok, typed


def _records_table(contract: str, records: list[dict]) -> pa.Table:
    schema = record_schema(contract)
    return pa.table(
        [pa.array([r[f.name] for r in records], type=f.type) for f in schema], schema=schema
    )


def validate_batch(
    contract: str, payloads: list[bytes | None], now: datetime
) -> tuple[pa.Table, list[int], list[tuple[int, str]]]:
    """Validate raw Kafka values like ``validate_event`` on each of them.

    Returns the accepted records (``record_schema(contract)``, in payload order), the indices of
    their payloads, and the rejects as ``(index, reason)`` in payload order.
    """
    schema = record_schema(contract)
    options = pj.ParseOptions(
        explicit_schema=_parse_schema(contract), unexpected_field_behavior="ignore"
    )
    # Payloads the fast path tries: JSON objects within the size limit. Every NDJSON line then
    # starts with "{", so it yields one row, an error, or several rows (``{..}{..}``, caught by
    # the row count); a line break inside a payload would break the framing.
    fast = [p is not None and 0 < len(p) <= MAX_PAYLOAD_BYTES and p[0] == 0x7B for p in payloads]
    if any(f.kind == "json" for f in EVENT_FIELDS[contract]):
        fast = [False] * len(payloads)
    if all(fast):
        positions = np.arange(len(payloads), dtype=np.int64)
        candidates: list[bytes] = payloads  # type: ignore[assignment]
        slow = []
    else:
        positions = np.flatnonzero(fast).astype(np.int64)
        candidates = [payloads[i] for i in positions.tolist()]
        slow = [i for i, f in enumerate(fast) if not f]
    data: bytes | None = b"\n".join(candidates)
    if data.count(b"\n") != len(candidates) - 1 or b"\r" in data:  # type: ignore[union-attr]
        framed = [b"\n" not in p and b"\r" not in p for p in candidates]
        slow.extend(positions[~np.array(framed, dtype=bool)].tolist())
        positions = positions[np.array(framed, dtype=bool)]
        candidates = [p for p, f in zip(candidates, framed, strict=True) if f]
        data = None
    pieces, unparsed = _parse(candidates, data, options)
    slow.extend(positions[unparsed].tolist())
    tables: list[pa.Table] = []
    index_arrays: list[pa.Array] = []
    for start, stop, table in pieces:
        ok, typed = _checks(contract, table, now)
        if isinstance(ok, pa.ChunkedArray):
            ok = ok.combine_chunks()
        idx = pa.array(positions[start:stop])
        if pc.all(ok).as_py():
            tables.append(typed.cast(schema))
            index_arrays.append(idx)
            continue
        tables.append(typed.filter(ok).cast(schema))
        index_arrays.append(idx.filter(ok))
        slow.extend(idx.filter(pc.invert(ok)).to_pylist())
    rejects: list[tuple[int, str]] = []
    records: list[dict] = []
    record_indices: list[int] = []
    for i in sorted(slow):
        try:
            records.append(validate_event(contract, payloads[i], now))
        except RejectedEvent as exc:
            rejects.append((i, str(exc)))
            continue
        record_indices.append(i)
    if records:
        tables.append(_records_table(contract, records))
        index_arrays.append(pa.array(record_indices, pa.int64()))
    if not tables:
        return schema.empty_table(), [], rejects
    accepted = pa.concat_tables(tables).append_column(
        "__index", pa.chunked_array(index_arrays, pa.int64())
    )
    if records:
        accepted = accepted.sort_by("__index")
    indices = accepted.column("__index").to_pylist()
    return accepted.drop_columns(["__index"]), indices, rejects
