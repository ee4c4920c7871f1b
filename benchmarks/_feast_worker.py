"""Feast side of ``benchmarks/pit_join.py`` (not a benchmark itself; runs in the Feast venv).

    FEAST_VENV/bin/python benchmarks/_feast_worker.py SPEC.json

``SPEC.json`` (written by pit_join.py) names the feature repo folder (with its
``feature_store.yaml``: DuckDB offline store), the entity parquet, one parquet per feature view
with its entity, join key, TTL (whole seconds) and features, and where to write the result.

Untimed: ``store.apply`` of the entities and feature views, reading the entity parquet into
pandas and shifting its timestamps by -1 microsecond (see pit_join.py: Feast sees equal
timestamps, our join does not). Timed: ``get_historical_features(...).to_arrow()`` only, which
includes DuckDB reading the feature parquet files. Prints one JSON line: wall and CPU seconds
(``process_time``: all threads) of that call, peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta

import pandas as pd
import pyarrow.parquet as pq

# Run by path (see pit_join.py), so benchmarks/ is sys.path[0]; the Feast venv has no repo package.
from _common import peak_rss_mb
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

FEAST_TYPES = {"float": Float64, "int": Int64, "str": String}


def main() -> int:
    with open(sys.argv[1]) as handle:
        spec = json.load(handle)
    entities = {
        name: Entity(name=name, join_keys=[key], value_type=ValueType.STRING)
        for name, key in spec["entities"].items()
    }
    views = []
    refs: list[str] = []
    for group in spec["groups"]:
        source = FileSource(
            name=f"{group['name']}_source",
            path=group["path"],
            timestamp_field=group["timestamp_field"],
        )
        views.append(
            FeatureView(
                name=group["name"],
                entities=[entities[group["entity"]]],
                ttl=timedelta(seconds=group["ttl_seconds"]),
                schema=[Field(name=n, dtype=FEAST_TYPES[d]) for n, d in group["features"]],
                source=source,
                online=False,
            )
        )
        refs.extend(f"{group['name']}:{n}" for n, _ in group["features"])
    store = FeatureStore(repo_path=spec["repo"])
    store.apply([*entities.values(), *views])

    entity_df = pd.read_parquet(spec["entity_path"])
    entity_df = entity_df.rename(columns={spec["time_column"]: "event_timestamp"})
    entity_df["event_timestamp"] = entity_df["event_timestamp"] - pd.Timedelta(
        microseconds=spec["shift_us"]
    )

    started, cpu = time.perf_counter(), time.process_time()
    table = store.get_historical_features(entity_df=entity_df, features=refs).to_arrow()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu

    names = [n for g in spec["groups"] for n, _ in g["features"]]
    pq.write_table(table.select([spec["row_id"], *names]), spec["out_path"])
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_s": cpu,
                "peak_mb": peak_rss_mb(),
                "rows": table.num_rows,
                "feast_version": __import__("feast").__version__,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
