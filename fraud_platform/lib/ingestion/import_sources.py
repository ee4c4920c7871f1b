"""The files an import reads: which ones, their identity (content hash), columns, rows in chunks.

Parquet is read row group by row group (pyarrow); a CSV file is read whole (polars, every
column as text, then converted per contract field, so a type guessed from the first rows cannot
break later ones).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = ("parquet", "csv")
_HASH_BLOCK = 1 << 22


class ImportFailed(ValueError):
    """A file cannot be imported (format, mapping); nothing of it was written."""


def source_files(path: Path, file_format: str | None = None) -> list[tuple[Path, str]]:
    """``[(file, format)]``: the file, or the folder's files of the format (sorted by name)."""
    if file_format is not None and file_format not in FORMATS:
        raise ImportFailed(f"unknown format {file_format!r}; one of {FORMATS}")
    if path.is_file():
        kind = file_format or path.suffix.lstrip(".").lower()
        if kind not in FORMATS:
            raise ImportFailed(f"{path}: cannot tell the format; pass --format parquet|csv")
        return [(path, kind)]
    if not path.is_dir():
        raise ImportFailed(f"{path}: no such file or folder")
    kinds = [file_format] if file_format else list(FORMATS)
    files = sorted(
        (p, p.suffix.lstrip(".").lower())
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lstrip(".").lower() in kinds
    )
    if not files:
        raise ImportFailed(f"{path}: no {' or '.join(kinds)} files in the folder")
    return files


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def columns_of(path: Path, kind: str) -> list[str]:
    if kind == "parquet":
        return pq.ParquetFile(path).schema_arrow.names
    return pl.scan_csv(path).collect_schema().names()


def chunks(
    path: Path, kind: str, columns: list[str], start: int, chunk_rows: int
) -> Iterator[pl.DataFrame]:
    """The file's rows from index ``start`` on, ``chunk_rows`` at a time (mapped columns only).

    Parquet is read row group by row group; a CSV file is read whole (polars, all columns as
    text then cast per field, so a type guess on the first rows cannot break later rows).
    """
    if kind == "csv":
        frame = pl.read_csv(path, columns=columns, infer_schema=False).slice(start)
        for offset in range(0, frame.height, chunk_rows):
            yield frame.slice(offset, chunk_rows)
        return
    handle = pq.ParquetFile(path)
    seen = 0
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in handle.iter_batches(batch_size=max(1, chunk_rows // 4), columns=columns):
        if seen + batch.num_rows <= start:
            seen += batch.num_rows
            continue
        if seen < start:
            batch = batch.slice(start - seen)
        seen = max(seen, start) + batch.num_rows
        pending.append(batch)
        size += batch.num_rows
        if size >= chunk_rows:
            yield pl.from_arrow(pa.Table.from_batches(pending))  # type: ignore[misc]
            pending, size = [], 0
    if pending:
        yield pl.from_arrow(pa.Table.from_batches(pending))  # type: ignore[misc]


def row_count(path: Path, kind: str) -> int:
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item()
