"""The stream worker's in-memory copy of the entity stores: CPU per checkpoint as it grows.

Per entity stream and checkpoint the worker adds the checkpoint's events to its copy and takes
the touched entities' rows (``lib/streaming/cache.EntityCache``). Compared with filtering the
whole copy (the worker before the cache was indexed), at 100k, 1M and 3M rows held, 1,000
events per checkpoint over a proportional number of entities; a merge of the tail is timed
apart and amortised over the events that trigger it.

    python benchmarks/stream_cache.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fraud_platform.lib.streaming import cache as cache_module  # noqa: E402
from fraud_platform.lib.streaming.cache import ENTITY, EntityCache  # noqa: E402

RNG = np.random.default_rng(1)
CHECKPOINTS = 100


def _events(n: int, entities: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_time": RNG.integers(0, 10**15, n),
            "transaction_id": [f"t{x}" for x in RNG.integers(0, 10**12, n)],
            "amount": RNG.random(n),
            ENTITY: [f"user-{x}" for x in RNG.integers(0, entities, n)],
        }
    )


def main() -> None:
    for size, entities in ((100_000, 20_000), (1_000_000, 200_000), (3_000_000, 500_000)):
        held = _events(size, entities)
        checkpoints = [_events(1000, entities) for _ in range(CHECKPOINTS)]
        frame = held
        started = time.process_time()
        for rows in checkpoints:
            frame = pl.concat([frame, rows], how="vertical")
            if frame.n_chunks() > 64:
                frame = frame.rechunk()
            whole = frame.filter(pl.col(ENTITY).is_in(rows[ENTITY].unique().to_list()))
        filtered_ms = (time.process_time() - started) / CHECKPOINTS * 1000
        cache = EntityCache()
        cache.add(held)
        cache._merge()
        started = time.process_time()
        for rows in checkpoints:
            cache.add(rows)
            indexed = cache.rows_of(rows[ENTITY].unique().to_list())
        indexed_ms = (time.process_time() - started) / CHECKPOINTS * 1000
        assert whole.height == indexed.height
        started = time.process_time()
        cache._merge()
        merge_ms = (time.process_time() - started) * 1000
        every = max(cache_module.TAIL_MIN_ROWS, cache.height // cache_module.TAIL_FRACTION)
        print(
            f"{size:>9,} rows held: whole-copy filter {filtered_ms:5.2f} ms CPU per checkpoint, "
            f"EntityCache {indexed_ms:5.2f} ms + merge {merge_ms:.0f} ms per {every:,} events "
            f"({merge_ms / every * 1000:.2f} ms per checkpoint)"
        )


if __name__ == "__main__":
    main()
