"""Latency of online feature fetches (``OnlineFeatureReader``) against a raw redis-py MGET.

    .venv/bin/python benchmarks/online_fetch.py [--quick] [--profile]

Writes one online row per entity (10 000 entities, ``--quick`` 1 000) of every group of
FRAUD_SCORING_V1 with ``write_snapshot`` into the real Redis at 127.0.0.1:6379, database 9
(flushed before and after). Then, in one loop with the order alternating every call, over 5 000
calls (``--quick`` 500) for a random entity:

* reader: ``OnlineFeatureReader.get_online_features(entities)``: keys, one Lua script call (one key
  per group, layout 3: the point-in-time row of each sorted set), decoding and TTL checks;
* raw: redis-py ``MGET`` of the same keys (built beforehand), nothing decoded (layout-3 keys are sorted sets: MGET answers nil for each, so this is only
  the floor of one round trip).

Then the same for 100 entities per fetch: ``OnlineFeatureReader.get_online_features_many``
(all 100 entities' keys in one script call) against a raw ``MGET`` of the same keys.

Before timing, the fetched values are checked against the written frames: for a sample of
entities each value is looked up by a brute-force scan of the frame that was written, plus
entities never written (every feature null). Any mismatch exits 1.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root

import numpy as np
import polars as pl

from benchmarks._common import emit, latency_ms, profiled, redis_client
from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.layout import to_micros
from fraud_platform.lib.features.online.reader import OnlineFeatureReader, OnlineFeatures
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.shared import hosts_of, storage_host
from fraud_platform.lib.features.windows import (
    lookup_granule,
    lookup_plan,
    lookup_value,
    profile_value,
    uniform_totals,
    window_start_us,
)

SERVICE = FRAUD_SCORING_V1
COUNTRIES = ["DE", "FR", "GB", "US", "NL", "ES", "IT", "PL"]
BATCH = 100
WARMUP = 50


class Mismatch(AssertionError):
    """A fetched value differs from the written one."""


def entity(i: int) -> dict[str, str]:
    """The join keys of entity ``i`` (every key any group of the service needs)."""
    return {
        "user_id": f"bu{i:06d}",
        "card_id": f"bc{i:06d}",
        "device_id": f"bd{i:06d}",
        "country": COUNTRIES[i % len(COUNTRIES)],
        "merchant_id": f"bm{i:06d}",
        "counterparty_id": f"bp{i:06d}",
    }


def group_frame(group: FeatureGroup, n: int, now: datetime, seed: int) -> pl.DataFrame:
    """One row per entity in the group's schema: entity_key, join keys, feature_time, features.

    Floats are full-precision randoms, ~5% of float and timestamp features null; feature_time
    lies within the last day (inside every group's TTL).
    """
    rng = np.random.default_rng(seed)
    keys = [entity(i) for i in range(n)]
    join = group.entity.join_keys
    now_us = int(now.timestamp() * 1_000_000)
    columns: dict[str, Any] = {
        ENTITY_KEY: [KEY_SEPARATOR.join(k[j] for j in join) for k in keys],
        **{j: [k[j] for k in keys] for j in join},
        FEATURE_TIME: pl.Series(now_us - rng.integers(1_000_000, 86_400_000_000, n)).cast(
            pl.Datetime("us", "UTC")
        ),
    }
    for feature in group.features:
        null = rng.random(n) < 0.05
        if feature.dtype == "int":
            columns[feature.name] = pl.Series(rng.integers(0, 1_000, n), dtype=pl.Int64)
        elif feature.dtype == "float":
            columns[feature.name] = with_nulls(pl.Series(rng.normal(100.0, 50.0, n)), null)
        elif feature.dtype == "ts":
            micros = pl.Series(now_us - rng.integers(0, 60 * 86_400_000_000, n))
            columns[feature.name] = with_nulls(micros.cast(pl.Datetime("us", "UTC")), null)
        else:
            columns[feature.name] = with_nulls(
                pl.Series([f"s{v}" for v in rng.integers(0, 50, n)]), null
            )
    # the hidden totals the windows are served from: `counts` events of one value per row
    counts = rng.integers(1, 50, n).tolist()
    values = rng.normal(100.0, 50.0, n).round(2).tolist()
    times = columns[FEATURE_TIME].to_list()
    hidden = [uniform_totals(group, c, v, t) for c, v, t in zip(counts, values, times, strict=True)]
    frame = pl.DataFrame(columns)
    return frame.hstack(pl.DataFrame(hidden)) if hidden and hidden[0] else frame


def with_nulls(values: pl.Series, null: np.ndarray) -> pl.Series:
    return values.zip_with(pl.Series(~null), pl.Series([None] * len(values), dtype=values.dtype))


def raw_fetch(client: Any, keys: Sequence[str]) -> list[Any]:
    return client.mget(keys)


def expected_for(
    frames: Mapping[str, pl.DataFrame], ents: Mapping[str, str], now: datetime
) -> OnlineFeatures:
    """Brute force: scan each written frame for the entity's row; a window served at ``now``
    holds the row's totals if the row is after the window's start, else nothing."""
    served: dict[str, Any] = {}
    times: dict[str, datetime | None] = {}
    for served_group in SERVICE.groups:
        values: dict[str, Any] = {}
        group = storage_host(served_group)  # the group whose rows serve it (written)
        key = KEY_SEPARATOR.join(ents[j] for j in group.entity.join_keys)
        rows = frames[group.versioned_name].filter(pl.col(ENTITY_KEY) == key).to_dicts()
        if len(rows) > 1:
            raise Mismatch(f"{group.versioned_name}: {len(rows)} written rows for {key}")
        row = rows[0] if rows else None
        times[served_group.versioned_name] = row[FEATURE_TIME] if row else None
        for name in group.feature_names:
            values[name] = row[name] if row else None
        for feature in lookup_plan(group).features if row else ():
            if (profile := feature.profile) is not None:
                first = lookup_granule(to_micros(now), feature.window)
                values[feature.name] = profile_value(
                    feature.function, row[profile.granules], row[profile.values], first
                )
                continue
            start = window_start_us(to_micros(now), feature.window)
            inside = to_micros(row[FEATURE_TIME]) > start
            totals = feature.totals
            n, s, q = (
                row[name] if name and inside else 0
                for name in (totals.count, totals.fixed_sum, totals.fixed_sumsq)
            )
            values[feature.name] = lookup_value(feature.function, n, s, q)
        served.update({name: values[name] for name in served_group.feature_names})
    return OnlineFeatures(values=served, feature_times=times)


def check(got: OnlineFeatures, want: OnlineFeatures, label: str) -> None:
    if got.feature_times != want.feature_times:
        raise Mismatch(f"{label}: feature times {got.feature_times} != {want.feature_times}")
    if set(got.values) != set(want.values):
        raise Mismatch(f"{label}: features {sorted(set(got.values) ^ set(want.values))} differ")
    for name, value in want.values.items():
        fetched = got.values[name]
        if fetched != value or type(fetched) is not type(value):
            raise Mismatch(f"{label}: {name} = {fetched!r}, written {value!r}")


def verify(
    reader: OnlineFeatureReader,
    frames: Mapping[str, pl.DataFrame],
    n_entities: int,
    sample: int,
    rng: random.Random,
) -> int:
    """Fetched (single and batch) == written for ``sample`` entities and some absent ones."""
    ids = rng.sample(range(n_entities), sample)
    absent = [n_entities + i for i in range(5)]
    now = datetime.now(UTC)
    for i in [*ids, *absent]:
        ents = entity(i)
        got = reader.get_online_features(ents, now)
        check(got, expected_for(frames, ents, now), f"entity {i}")
    for start in range(0, len(ids), BATCH):
        chunk = [*ids[start : start + BATCH], absent[0]]
        got_many = reader.get_online_features_many([entity(i) for i in chunk], now)
        for i, features in zip(chunk, got_many, strict=True):
            check(features, expected_for(frames, entity(i), now), f"batch entity {i}")
    return len(ids) + len(absent)


def interleaved(
    a: Callable[[], Any], b: Callable[[], Any], prepare: Callable[[], None], n: int
) -> tuple[list[float], list[float]]:
    """Durations of ``a`` and ``b`` over ``n`` rounds, their order alternating each round."""
    times_a: list[float] = []
    times_b: list[float] = []
    clock = time.perf_counter
    for i in range(WARMUP + n):
        prepare()
        first, second = (a, b) if i % 2 == 0 else (b, a)
        t0 = clock()
        first()
        t1 = clock()
        second()
        t2 = clock()
        if i >= WARMUP:
            da, db = (t1 - t0, t2 - t1) if i % 2 == 0 else (t2 - t1, t1 - t0)
            times_a.append(da)
            times_b.append(db)
    return times_a, times_b


def reader_versus_raw(
    reader: Mapping[str, float], raw: Mapping[str, float], suffix: str = ""
) -> dict[str, float]:
    """Reader and raw-MGET percentiles (``latency_ms`` results) and their ratios."""
    return {
        f"p50_ms{suffix}": reader["p50"],
        f"p99_ms{suffix}": reader["p99"],
        f"raw_p50_ms{suffix}": raw["p50"],
        f"raw_p99_ms{suffix}": raw["p99"],
        f"ratio_p50{suffix}": round(reader["p50"] / raw["p50"], 3),
        f"ratio_p99{suffix}": round(reader["p99"] / raw["p99"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 000 entities, 500 calls (CI)")
    parser.add_argument("--profile", action="store_true", help="cProfile top 10 of the reader")
    args = parser.parse_args()
    n_entities = 1_000 if args.quick else 10_000
    calls = 500 if args.quick else 5_000
    calls_100 = max(200, calls // 5)
    sample = 100 if args.quick else 500
    rng = random.Random(11)

    client = redis_client()
    client.flushdb()
    lines: list[str] = []
    results: dict[str, Any] = {"entities": n_entities, "calls": calls, "quick": args.quick}
    try:
        now = datetime.now(UTC) - timedelta(seconds=1)
        frames = {
            g.versioned_name: group_frame(g, n_entities, now, seed)
            for seed, g in enumerate(hosts_of(SERVICE.groups))
        }
        started = time.perf_counter()
        for group in hosts_of(SERVICE.groups):
            write_snapshot(client, group, frames[group.versioned_name])
        lines.append(
            f"wrote {n_entities} entities x {len(SERVICE.groups)} groups in "
            f"{time.perf_counter() - started:.2f} s"
        )
        reader = OnlineFeatureReader(client, SERVICE)
        checked = verify(reader, frames, n_entities, sample, rng)
        lines.append(f"checked {checked} entities (single and batch fetch) against the frames: ok")

        state: dict[str, Any] = {}

        def pick_one() -> None:
            ents = entity(rng.randrange(n_entities))
            state["ents"] = ents
            state["keys"] = [k for k in reader.keys_for(ents) if k is not None]

        single, raw = interleaved(
            lambda: reader.get_online_features(state["ents"]),
            lambda: raw_fetch(client, state["keys"]),
            pick_one,
            calls,
        )

        def pick_batch() -> None:
            batch = [entity(i) for i in rng.sample(range(n_entities), BATCH)]
            state["batch"] = batch
            state["batch_keys"] = [
                k for ents in batch for k in reader.keys_for(ents) if k is not None
            ]

        multi, raw_multi = interleaved(
            lambda: reader.get_online_features_many(state["batch"]),
            lambda: raw_fetch(client, state["batch_keys"]),
            pick_batch,
            calls_100,
        )
        one = reader.get_online_features(entity(0))
        s, r, m, rm = latency_ms(single), latency_ms(raw), latency_ms(multi), latency_ms(raw_multi)
        results.update(
            {
                "groups": len(SERVICE.groups),
                "features": len(one.values),
                **reader_versus_raw(s, r),
                "calls_100": calls_100,
                **reader_versus_raw(m, rm, suffix="_100"),
                "checked_entities": checked,
                "batch_method": "OnlineFeatureReader.get_online_features_many (one Lua script call: the point-in-time row of each key)",
                "raw": "redis-py MGET of the same keys (layout 3 keys are sorted sets: MGET answers nil for each, a floor for one round trip)",
            }
        )
        lines.append(
            f"1 entity ({len(SERVICE.groups)} keys, {len(one.values)} features): reader p50 "
            f"{s['p50']:.3f} ms p99 {s['p99']:.3f} ms; raw MGET p50 {r['p50']:.3f} ms p99 "
            f"{r['p99']:.3f} ms; p99 ratio {s['p99'] / r['p99']:.2f}"
        )
        lines.append(
            f"{BATCH} entities ({BATCH * len(SERVICE.groups)} keys): reader p50 {m['p50']:.3f} ms "
            f"p99 {m['p99']:.3f} ms; raw MGET p50 {rm['p50']:.3f} ms p99 {rm['p99']:.3f} ms"
        )
        if args.profile:
            ents = entity(1)

            def many() -> None:
                for _ in range(calls):
                    reader.get_online_features(ents)

            _, report = profiled(many)
            lines.append(f"cProfile of {calls} get_online_features calls:\n{report}")
    except Mismatch as exc:
        print(f"MISMATCH: {exc}", file=sys.stderr)
        results["error"] = f"mismatch: {exc}"
        emit(results, lines)
        return 1
    finally:
        client.flushdb()
        client.close()
    emit(results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
