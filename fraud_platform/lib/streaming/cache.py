"""The stream worker's in-memory copy of the entity stores it touched (``processor``), found
by entity without scanning the copy.

Rows are kept in two parts: ``main``, grouped by entity (each entity's rows contiguous, found
by its position in ``_offsets``/``_lengths``), and a tail of the rows added since ``main`` was
built, which is scanned. When the tail outgrows ``max(TAIL_MIN_ROWS, main / TAIL_FRACTION)``
it is merged into ``main`` (one sort). An entity read back from its store (``replace``) drops
its tail rows at once and its ``main`` rows at the next merge (they are no longer found).

Measured (``benchmarks/stream_cache.py``: CPU per entity stream per checkpoint of 1,000
events, merges amortised): filtering the whole copy, as every checkpoint did, 1.5 / 6.1 / 15.7
ms at 100k / 1M / 3M rows held (54 ms at 5M, MAX_CACHED_EVENTS); this copy 1.9-2.5 / 3.1 / 3.2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from fraud_platform.lib.streaming.columnar import ENTITY

TAIL_MIN_ROWS = 10_000
TAIL_FRACTION = 8
MAX_TAIL_CHUNKS = 64  # a chunk per checkpoint slows every filter of the tail


class EntityCache:
    """Rows (with an ``ENTITY`` column) of the entities held, and their store versions."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self._main: pl.DataFrame | None = None
        self._position: dict[str, int] = {}  # entity -> its index in _offsets/_lengths
        self._offsets = np.zeros(0, dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.int64)
        self._dropped: set[str] = set()  # entities whose main rows are no longer theirs
        self._tail: pl.DataFrame | None = None

    @property
    def height(self) -> int:
        """Rows held, including ``main`` rows dropped since it was built."""
        main = 0 if self._main is None else self._main.height
        return main + (0 if self._tail is None else self._tail.height)

    def add(self, rows: pl.DataFrame) -> None:
        """New rows of entities held or new (empty ``rows`` still give the schema)."""
        if self._tail is None:
            self._tail = rows
        elif rows.height:
            self._tail = pl.concat([self._tail, rows], how="vertical")
            if self._tail.n_chunks() > MAX_TAIL_CHUNKS:
                self._tail = self._tail.rechunk()

    def replace(self, entities: Sequence[str], rows: pl.DataFrame) -> None:
        """``entities``' rows are ``rows`` from now on (read back from their stores)."""
        for entity in entities:
            if self._position.pop(entity, None) is not None:
                self._dropped.add(entity)
        if self._tail is not None and self._tail.height:
            self._tail = self._tail.filter(~pl.col(ENTITY).is_in(list(entities)))
        self.add(rows)

    def rows_of(self, entities: Sequence[str]) -> pl.DataFrame:
        """The rows of ``entities`` (any order), without the ``ENTITY`` column."""
        assert self._tail is not None, "add() gives the schema first"
        parts = []
        if self._main is not None:
            found = [p for e in entities if (p := self._position.get(e)) is not None]
            if found:
                at = np.asarray(found, dtype=np.int64)
                lengths = self._lengths[at]
                # the positions of each found entity's run: offset + 0..length-1, vectorised
                starts = np.repeat(self._offsets[at] - (np.cumsum(lengths) - lengths), lengths)
                parts.append(self._main[starts + np.arange(int(lengths.sum()))])
        parts.append(self._tail.filter(pl.col(ENTITY).is_in(list(entities))))
        rows = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
        if self._tail.height > max(TAIL_MIN_ROWS, self.height // TAIL_FRACTION):
            self._merge()
        return rows.drop(ENTITY)

    def _merge(self) -> None:
        assert self._tail is not None
        parts = [self._tail]
        if self._main is not None:
            parts.insert(0, self._main.filter(~pl.col(ENTITY).is_in(list(self._dropped))))
        main = pl.concat(parts, how="vertical").sort(ENTITY)
        runs = main.get_column(ENTITY).rle()
        lengths = runs.struct.field("len").cast(pl.Int64).to_numpy()
        self._offsets = np.cumsum(lengths) - lengths
        self._lengths = lengths
        self._position = {e: i for i, e in enumerate(runs.struct.field("value").to_list())}
        self._main = main
        self._dropped = set()
        self._tail = main.clear()
