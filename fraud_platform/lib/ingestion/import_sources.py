"""The files an import reads: which ones, their identity (content hash), columns, and their
rows as a stream of batches (polars' streaming engine; bounded memory)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import polars as pl
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


def batches(
    path: Path, kind: str, columns: list[str], start: int, batch_rows: int
) -> Iterator[pl.DataFrame]:
    """The file's rows from index ``start`` on, about ``batch_rows`` at a time (mapped columns
    only), streamed by polars (the next batch is read while the caller works on this one;
    memory stays at a few batches whatever the file's size).

    A CSV file is read with every column as text, converted per contract field later, so a type
    guessed from the first rows cannot break later rows.
    """
    if kind == "csv":
        scan = pl.scan_csv(path, infer_schema=False)
    else:
        scan = pl.scan_parquet(path)
    yield from scan.select(columns).slice(start).collect_batches(chunk_size=batch_rows)


def row_count(path: Path, kind: str) -> int:
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    return pl.scan_csv(path, infer_schema=False).select(pl.len()).collect().item()
