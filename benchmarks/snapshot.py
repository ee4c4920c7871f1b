"""Throughput of ``write_snapshot`` (latest feature rows -> Redis) against a raw pipeline.

    .venv/bin/python benchmarks/snapshot.py [--quick] [--rows N] [--profile]

Synthesizes N rows (default 500 000, ``--quick`` 50 000) in the schema of
``user_txn_velocity_v1`` (entity_key, user_id, feature_time, 14 features; one row per user, ~10%
of the std feature null, feature_time within the last day), straight with polars. Into the real
Redis at 127.0.0.1:6379, database 9 (flushed before, between and after), in the same run:

* raw: the same commands ``write_snapshot`` sends (per key DEL, HSET of the encoded mapping,
  PEXPIREAT; one MULTI pipeline per 5 000 keys), with the mappings encoded beforehand (untimed):
  what Redis and redis-py cost on their own;
* ``write_snapshot(client, USER_TXN_VELOCITY, rows)``: encoding included.

Then a sample of keys is read back and compared with the frame (values decoded by their dtype,
null features absent, ``_ft``, an expiry at feature_time + TTL), and the key count must be N;
any difference exits 1. Target from the issue (reported, not enforced): >= 200 000 rows/s.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

import numpy as np
import polars as pl

from benchmarks._common import emit, profiled, redis_client
from fraud_platform.lib.features.catalog import USER_TXN_VELOCITY
from fraud_platform.lib.features.online import (
    FEATURE_TIME_FIELD,
    online_key,
    to_micros,
    write_snapshot,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME

GROUP = USER_TXN_VELOCITY
TARGET_ROWS_PER_S = 200_000
PIPELINE_KEYS = 5_000  # write_snapshot's default batch_size


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
    frame = pl.DataFrame(columns)
    null_std = pl.Series(rng.random(n) < 0.1)
    return frame.with_columns(
        pl.when(null_std)
        .then(None)
        .otherwise(pl.col("user_amount_std_30d"))
        .alias("user_amount_std_30d")
    )


def encode_all(rows: pl.DataFrame) -> list[tuple[str, dict[str, str], int]]:
    """(key, mapping, expire-at ms) per row, encoded as the online layout says (untimed)."""
    names = GROUP.feature_names
    dtypes = {f.name: f.dtype for f in GROUP.features}
    ttl_ms = int(GROUP.ttl.total_seconds() * 1000)
    out = []
    for row in rows.select(ENTITY_KEY, FEATURE_TIME, *names).iter_rows():
        micros = to_micros(row[1])
        mapping = {FEATURE_TIME_FIELD: str(micros)}
        for name, value in zip(names, row[2:], strict=True):
            if value is None:
                continue
            kind = dtypes[name]
            mapping[name] = (
                str(to_micros(value))
                if kind == "ts"
                else repr(value)
                if kind == "float"
                else str(value)
            )
        out.append((online_key(GROUP, row[0]), mapping, micros // 1000 + ttl_ms + 1_000))
    return out


def raw_write(client: Any, encoded: list[tuple[str, dict[str, str], int]]) -> None:
    for start in range(0, len(encoded), PIPELINE_KEYS):
        pipe = client.pipeline(transaction=True)
        for key, mapping, expire_ms in encoded[start : start + PIPELINE_KEYS]:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.pexpireat(key, expire_ms)
        pipe.execute()


def verify(client: Any, rows: pl.DataFrame, sample: int, rng: random.Random) -> list[str]:
    """Differences between Redis and the frame for ``sample`` random rows (empty: all equal)."""
    errors: list[str] = []
    if client.dbsize() != rows.height:
        errors.append(f"{client.dbsize()} keys in Redis, {rows.height} rows written")
    dtypes = {f.name: f.dtype for f in GROUP.features}
    now_ms = int(time.time() * 1000)
    for index in rng.sample(range(rows.height), sample):
        row = rows.row(index, named=True)
        key = online_key(GROUP, row[ENTITY_KEY])
        stored = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
        want_ft = to_micros(row[FEATURE_TIME])
        if stored.pop(FEATURE_TIME_FIELD, None) != str(want_ft):
            errors.append(f"{key}: _ft missing or not {want_ft}")
        for name, kind in dtypes.items():
            value, text = row[name], stored.pop(name, None)
            if value is None:
                if text is not None:
                    errors.append(f"{key}: {name} is null but stored as {text!r}")
                continue
            if text is None:
                errors.append(f"{key}: {name} = {value!r} not stored")
                continue
            got: Any = {"int": int, "float": float, "ts": int, "str": str}[kind](text)
            if got != (to_micros(value) if kind == "ts" else value):
                errors.append(f"{key}: {name} stored {text!r}, written {value!r}")
        if stored:
            errors.append(f"{key}: unexpected fields {sorted(stored)}")
        expire_ms = want_ft // 1000 + int(GROUP.ttl.total_seconds() * 1000) + 1_000
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

        encoded = encode_all(rows)
        started = time.perf_counter()
        raw_write(client, encoded)
        raw_s = time.perf_counter() - started
        del encoded
        client.flushdb()

        started = time.perf_counter()
        written = write_snapshot(client, GROUP, rows)
        seconds = time.perf_counter() - started
        errors = verify(client, rows, sample, random.Random(3))
        if written != n:
            errors.append(f"write_snapshot returned {written}, expected {n}")

        rate, raw_rate = n / seconds, n / raw_s
        results.update(
            {
                "rows_per_s": round(rate),
                "seconds": round(seconds, 3),
                "raw_rows_per_s": round(raw_rate),
                "raw_seconds": round(raw_s, 3),
                "ratio": round(rate / raw_rate, 3),
                "meets_200k_per_s": rate >= TARGET_ROWS_PER_S,
                "checked_keys": sample,
                "mismatches": len(errors),
            }
        )
        lines.append(
            f"write_snapshot: {rate:,.0f} rows/s ({seconds:.2f} s); same commands pre-encoded: "
            f"{raw_rate:,.0f} rows/s ({raw_s:.2f} s); ratio {rate / raw_rate:.2f}; target "
            f"{TARGET_ROWS_PER_S:,}/s {'met' if rate >= TARGET_ROWS_PER_S else 'NOT met'}"
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
