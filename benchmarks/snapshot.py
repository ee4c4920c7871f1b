"""Throughput of ``write_snapshot`` (latest feature rows -> Redis) against raw baselines.

    .venv/bin/python benchmarks/snapshot.py [--quick] [--rows N] [--profile]

Synthesizes N rows (default 500 000, ``--quick`` 50 000) in the schema of
``user_txn_velocity_v1`` (entity_key, user_id, feature_time, 14 features; one row per user, ~10%
of the std feature null, feature_time within the last day), straight with polars. Into the real
Redis at 127.0.0.1:6379, database 9 (flushed before, between and after), in the same run:

* redis-py: the rows of layout 3 written WITHOUT comparing (``ZADD key score member`` and
  ``PEXPIREAT`` per key), values encoded beforehand, through a redis-py pipeline: what the
  store costs without the compare-on-write script;
* ``write_snapshot(client, USER_TXN_VELOCITY_V2, rows)``: encoding included, through the
  compare-on-write Lua script (layout 3). Its encoding time (``encode_rows``) is reported.

Then a sample of keys is read back and compared with the frame (JSON row decoded: feature_time,
every feature bit-exact by its dtype, nulls null, the windowed features evaluated at the lookup
null, an expiry at feature_time + TTL), and the key
count must be N; any difference exits 1. Target from the issue (reported, not enforced):
>= 200 000 rows/s.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

import numpy as np
import polars as pl

from benchmarks._common import emit, profiled, redis_client
from fraud_platform.lib.features.catalog import USER_TXN_VELOCITY_V2
from fraud_platform.lib.features.online.layout import (
    EXPIRY_GRANULE_MS,
    EXPIRY_MARGIN_MS,
    encode_rows,
    online_key,
    to_micros,
)
from fraud_platform.lib.features.online.writer import DEFAULT_BATCH_SIZE, write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME
from fraud_platform.lib.features.windows import at_lookup, stored_group, uniform_totals

GROUP = USER_TXN_VELOCITY_V2  # version 1 is served from its rows
STORED = stored_group(GROUP)  # its declared features and the hidden ones a row carries
TARGET_ROWS_PER_S = 200_000
BATCH = DEFAULT_BATCH_SIZE  # write_snapshot's default batch_size


def synthesize(n: int, now: datetime, seed: int = 5) -> pl.DataFrame:
    """``n`` latest rows of the group, one per user, in the group's schema."""
    rng = np.random.default_rng(seed)
    now_us = to_micros(now)
    feature_us = now_us - rng.integers(1_000_000, 86_400_000_000, n)
    ts = pl.Datetime("us", "UTC")
    user_ids = pl.Series([f"u{i:08d}" for i in range(n)])
    columns: dict[str, Any] = {
        ENTITY_KEY: user_ids,
        "user_id": user_ids,
        FEATURE_TIME: pl.Series(feature_us).cast(ts),
    }
    for feature in GROUP.features:
        if feature.dtype == "int":
            columns[feature.name] = pl.Series(rng.integers(0, 500, n), dtype=pl.Int64)
        elif feature.dtype == "ts":  # user_last_txn_time: the newest event, i.e. feature_time
            columns[feature.name] = pl.Series(feature_us).cast(ts)
        else:
            columns[feature.name] = pl.Series(np.abs(rng.normal(80.0, 60.0, n)))
    # the hidden prefix totals windows at the lookup read: `count` events of one amount each
    counts = rng.integers(1, 500, n).tolist()
    amounts = np.abs(rng.normal(80.0, 60.0, n)).round(2).tolist()
    starts = (pl.Series(feature_us) - 86_400_000_000).cast(ts).to_list()
    feature_times = pl.Series(feature_us).cast(ts).to_list()
    totals = pl.DataFrame(
        [
            uniform_totals(GROUP, c, a, t, f)
            for c, a, t, f in zip(counts, amounts, starts, feature_times, strict=True)
        ]
    )
    frame = pl.DataFrame(columns).hstack(totals)
    null_std = pl.Series(rng.random(n) < 0.1)
    return frame.with_columns(
        pl.when(null_std)
        .then(None)
        .otherwise(pl.col("user_amount_std_30d"))
        .alias("user_amount_std_30d")
    )


def encode_batches(rows: pl.DataFrame) -> list[pl.DataFrame]:
    columns = [ENTITY_KEY, FEATURE_TIME, *STORED.feature_names]
    return list(encode_rows(GROUP, rows.select(columns)).iter_slices(BATCH))


def redispy_write(client: Any, batches: list[list[tuple[str, int, int, str, int]]]) -> None:
    """The rows as sorted-set members, no comparison: ZADD + PEXPIREAT per key, pipelined."""
    for batch in batches:
        pipe = client.pipeline(transaction=False)
        for key, score, _, value, pxat, *_ in batch:
            pipe.zadd(key, {value: score})
            pipe.pexpireat(key, pxat)
        pipe.execute()


def _bits(value: float) -> bytes:
    return struct.pack("<d", value)


def verify(client: Any, rows: pl.DataFrame, sample: int, rng: random.Random) -> list[str]:
    """Differences between Redis and the frame for ``sample`` random rows (empty: all equal)."""
    errors: list[str] = []
    if client.dbsize() != rows.height:
        errors.append(f"{client.dbsize()} keys in Redis, {rows.height} rows written")
    now_ms = int(time.time() * 1000)
    for index in rng.sample(range(rows.height), sample):
        row = rows.row(index, named=True)
        key = online_key(GROUP, row[ENTITY_KEY])
        members = client.zrange(key, 0, -1)
        if len(members) != 1:
            errors.append(f"{key}: {len(members)} rows stored, expected 1")
            continue
        stored = json.loads(members[0])
        want_ft = to_micros(row[FEATURE_TIME])
        if len(stored) != 2 + len(STORED.features) or stored[-1] != 0:
            errors.append(f"{key}: {stored!r} is not a layout-5 batch row")
            continue
        if stored[0] != want_ft or type(stored[0]) is not int:
            errors.append(f"{key}: feature_time {stored[0]!r}, expected {want_ft}")
        for feature, got in zip(STORED.features, stored[1:-1], strict=True):
            value, kind = row[feature.name], feature.dtype
            if at_lookup(feature):  # evaluated at the lookup from the hidden columns: null
                if got is not None:
                    errors.append(f"{key}: {feature.name} stored {got!r}, expected null")
                continue
            if kind == "fixed":  # a hidden total: an exact integer
                if got != value or type(got) is not int:
                    errors.append(f"{key}: {feature.name} stored {got!r}, written {value!r}")
                continue
            if value is None or got is None:
                if value is not got:
                    errors.append(f"{key}: {feature.name} stored {got!r}, written {value!r}")
                continue
            same = (
                _bits(float(got)) == _bits(value)
                if kind == "float"
                else got == (to_micros(value) if kind == "ts" else value)
            )
            if not same:
                errors.append(f"{key}: {feature.name} stored {got!r}, written {value!r}")
        hour_end_ms = (want_ft // 1000 // EXPIRY_GRANULE_MS + 1) * EXPIRY_GRANULE_MS
        expire_ms = hour_end_ms + int(GROUP.ttl.total_seconds() * 1000) + EXPIRY_MARGIN_MS
        pttl = client.pttl(key)
        if not 0 < pttl <= expire_ms - now_ms + 1_000 or pttl < expire_ms - now_ms - 60_000:
            errors.append(f"{key}: pttl {pttl} ms, expected about {expire_ms - now_ms} ms")
        if len(errors) > 20:
            break
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 000 rows (CI)")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--profile", action="store_true", help="cProfile top 10 of write_snapshot")
    args = parser.parse_args()
    n = args.rows or (50_000 if args.quick else 500_000)
    sample = 200 if args.quick else 1_000

    client = redis_client()
    client.flushdb()
    lines: list[str] = []
    results: dict[str, Any] = {"rows": n, "group": GROUP.versioned_name, "quick": args.quick}
    try:
        now = datetime.now(UTC)
        started = time.perf_counter()
        rows = synthesize(n, now)
        lines.append(f"synthesized {n} rows in {time.perf_counter() - started:.2f} s")

        started = time.perf_counter()
        batches = encode_batches(rows)
        encode_s = time.perf_counter() - started

        tuples = [list(batch.iter_rows()) for batch in batches]
        started = time.perf_counter()
        redispy_write(client, tuples)
        redispy_s = time.perf_counter() - started
        del tuples, batches
        client.flushdb()

        started = time.perf_counter()
        written = write_snapshot(client, GROUP, rows)
        seconds = time.perf_counter() - started
        errors = verify(client, rows, sample, random.Random(3))
        if written != n:
            errors.append(f"write_snapshot returned {written}, expected {n}")

        rate, redispy_rate = n / seconds, n / redispy_s
        results.update(
            {
                "rows_per_s": round(rate),
                "seconds": round(seconds, 3),
                "redispy_no_compare_rows_per_s": round(redispy_rate),
                "ratio": round(rate / redispy_rate, 3),
                "encode_seconds": round(encode_s, 3),
                "batch_size": BATCH,
                "meets_200k_per_s": rate >= TARGET_ROWS_PER_S,
                "checked_keys": sample,
                "mismatches": len(errors),
            }
        )
        lines.append(
            f"write_snapshot (compare-on-write script): {rate:,.0f} rows/s ({seconds:.2f} s); "
            f"redis-py ZADD+PEXPIREAT without comparing: {redispy_rate:,.0f} rows/s; "
            f"encode_rows {encode_s:.2f} s; target {TARGET_ROWS_PER_S:,}/s "
            f"{'met' if rate >= TARGET_ROWS_PER_S else 'NOT met'}"
        )
        if errors:
            lines.append("READ-BACK CHECK FAILED:\n  " + "\n  ".join(errors[:20]))
        else:
            lines.append(f"read back {sample} random keys and the key count: equal to the frame")

        if args.profile:
            client.flushdb()
            _, report = profiled(lambda: write_snapshot(client, GROUP, rows))
            lines.append(f"cProfile of write_snapshot ({n} rows):\n{report}")
    finally:
        client.flushdb()
        client.close()
    emit(results, lines)
    return 1 if results.get("mismatches", 1) else 0


if __name__ == "__main__":
    sys.exit(main())
