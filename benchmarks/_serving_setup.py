"""The world ``serving_load.py`` serves in: a private Redis, the request mix and its online
features, and the thresholds a fraud team would set on it."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._bench_model import model_metadata
from benchmarks._common import redis_client
from fraud_platform.lib.contracts.events import EVENT_FIELDS, TRANSACTIONS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import KEY_SEPARATOR
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.shared import hosts_of
from fraud_platform.lib.features.windows import uniform_totals
from tests.serving.conftest import free_port


def request_mix(n: int, seed: int = 11) -> list[dict[str, Any]]:
    """``n`` transactions of the last simulated day, as /score bodies (no event_time)."""
    import polars as pl  # noqa: F401  (the simulator's import cost is paid here, not in timing)

    from fraud_platform.lib.simulation import SimulationConfig, simulate

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    simulation = simulate(SimulationConfig(days=2, users=1000, seed=seed, start=start))
    last_day = [t for t in simulation.transactions if t["event_time"] >= start + timedelta(days=1)]
    stride = max(1, len(last_day) // n)
    fields = [f.name for f in EVENT_FIELDS[TRANSACTIONS] if f.name != "event_time"]
    return [{k: t[k] for k in fields if t.get(k) is not None} for t in last_day[::stride][:n]]


def _value(group: FeatureGroup, name: str, feature_time: datetime, i: int) -> Any:
    """Varied but ordinary: no recent password/2FA change, no card-testing burst, so the hard
    rules fire about as rarely as in real traffic and flagged requests stay a few percent."""
    dtype = group.feature(name).dtype
    if dtype == "ts":
        return feature_time - timedelta(days=30 + i % 300)
    if dtype == "int":
        return i % 2
    return float(i % 97)


def write_features(client: Any, mix: list[dict[str, Any]], feature_time: datetime) -> int:
    """A fresh row of every feature group for every entity the mix names."""
    import polars as pl

    written = 0
    for group in hosts_of(FEATURE_GROUPS):  # a group another serves is read from its rows
        keys = sorted(
            {
                KEY_SEPARATOR.join(str(t[k]) for k in group.entity.join_keys)
                for t in mix
                if all(t.get(k) is not None for k in group.entity.join_keys)
            }
        )
        rows = [
            {
                ENTITY_KEY: key,
                FEATURE_TIME: feature_time,
                **{name: _value(group, name, feature_time, i) for name in group.feature_names},
                **uniform_totals(group, 1 + i % 3, float(i % 97), feature_time),
            }
            for i, key in enumerate(keys)
        ]
        if rows:
            written += write_snapshot(client, group, pl.DataFrame(rows))
    return written


def realistic_thresholds(
    model: Any, client: Any, mix: list[dict[str, Any]]
) -> tuple[dict[str, float], dict[str, int], int]:
    """Thresholds a fraud team would set: ~2% of the mix reviewed, ~0.3% declined; the
    decisions the mix then gets in process (rules included: every non-approve pays SHAP); and
    how many of the mix's scores differ from ``predict_proba`` on the same model row (the
    service's one-row path must give exactly the batch path's score: 0).

    The synthetic model's own 0.5/0.9 would send ~30% of this mix to review (and through SHAP);
    a payment flow reviews a few percent.
    """
    from fraud_platform.lib.features.request import model_row
    from fraud_platform.lib.model.input import predict_proba
    from fraud_platform.lib.serving.lookup import FeatureLookup
    from fraud_platform.lib.serving.scoring import ScoringModel

    metadata = model_metadata(model)
    lookup = FeatureLookup(client)
    now = datetime.now(UTC)
    txns = [{"counterparty_id": None, **t, "event_time": now} for t in mix]
    looked_up = [lookup.lookup(t).values for t in txns]
    probe = ScoringModel.from_metadata(model, metadata, "fraud_catboost:probe")
    served = [
        probe.score(t, v, explain="never").score for t, v in zip(txns, looked_up, strict=True)
    ]
    batch = predict_proba(
        model,
        [model_row(t, v, probe.service) for t, v in zip(txns, looked_up, strict=True)],
        allow_missing=True,
    )
    mismatches = sum(a != float(b) for a, b in zip(served, batch, strict=True))
    scores = sorted(served)
    thresholds = {
        "review": round(scores[int(len(scores) * 0.98)], 6),
        "decline": round(scores[int(len(scores) * 0.997)], 6),
    }
    final = ScoringModel.from_metadata(
        model, {**metadata, "thresholds": thresholds}, "fraud_catboost:probe"
    )
    decisions: dict[str, int] = {}
    for t, v in zip(txns, looked_up, strict=True):
        decision = final.score(t, v, explain="never").decision
        decisions[decision] = decisions.get(decision, 0) + 1
    return thresholds, decisions, mismatches


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A ``redis-server`` of this run only (free port, no persistence): the shared benchmark
    database (6379/9) is flushed by whichever other benchmark starts meanwhile, which left a
    run scoring half its requests without features."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(folder)]
    with (folder / "redis.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis_client(url).close()
                break
            except SystemExit:  # redis_client's "not reachable": not up yet
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start; see {folder}") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
