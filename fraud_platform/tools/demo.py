"""``fraud-platform demo``: the whole loop on one machine with the embedded defaults.

Services up -> simulate ~30 days onto Kafka -> the asset graph (bronze, dbt, features, online
store, training set, model, promotion) -> the scoring service -> replay of a held-out period
through ``/score`` -> monitoring -> a summary (printed, and JSON in the data directory).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fraud_platform import names
from fraud_platform.lib.contracts.events import (
    ACCOUNT_EVENTS,
    LABELS,
    TRANSACTIONS,
    format_timestamp,
)
from fraud_platform.settings import Settings
from fraud_platform.tools.demo_report import (
    DAILY_MONITORING_SUMMARY,
    daily_monitoring,
    days_between,
    print_summary,
    rows_per_asset,
    training_metadata,
    warehouse_rows,
)

# Size presets of ``fraud-platform demo --scale``: (days, users). Memory stays bounded at any
# size (the simulation streams a week at a time; the embedded broker is trimmed after each
# million events); time grows with days x users (README, "A year on one machine").
SCALES: dict[str, tuple[int, int]] = {
    "default": (30, 2000),
    "quarter": (90, 5000),
    "year": (365, 2000),
}


@dataclass(frozen=True)
class DemoConfig:
    days: int = 30
    users: int = 2000
    seed: int = 7
    holdout_days: int = 2
    replay_limit: int = 2000
    realtime: bool = True  # publish the held-out period while the stream worker runs
    replay_rate: int = 400  # held-out events published per second (realtime)


def recent_start(days: int) -> datetime:
    """Simulate the ``days`` up to today's UTC midnight: online TTLs run on the wall clock."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def _say(message: str) -> None:
    print(message, flush=True)


def _previous_start(settings: Settings, config: DemoConfig) -> datetime | None:
    """A re-run reuses the first run's time window, so it regenerates the very same events."""
    marker = settings.data_dir / "published_simulation.json"
    if not marker.exists():
        return None
    previous = json.loads(marker.read_text())["simulation"]
    if {k: v for k, v in previous.items() if k != "start"} != asdict(config):
        return None
    return datetime.fromisoformat(previous["start"].replace("Z", "+00:00"))


def seed_simulated_profiles(
    settings: Settings, seed: int, users: int, start: datetime, say: Callable[[str], None] = print
) -> bool:
    """Upsert the simulated users' account profiles into PostgreSQL (the profiles source).

    They describe the users as of ``start``, and are stamped so (``updated_at = start``): the
    simulated transactions, all after it, see them point in time (the account_profile group).

    False, after one line saying so, when PostgreSQL is not reachable: the pipeline then goes
    on without ``bronze/account_profiles`` (its asset is told to skip instead of failing).
    """
    from fraud_platform.lib.ingestion.profiles_source import (
        PostgresUnreachable,
        connection,
        ensure_schema,
        seed_profiles,
    )
    from fraud_platform.lib.simulation.profiles import simulated_profiles

    if not settings.profiles_pg_url:
        say("account profiles skipped: no PostgreSQL URL configured")
        return False
    try:
        with connection(settings.profiles_pg_url, timeout_s=3) as conn:
            ensure_schema(conn)
            changed = seed_profiles(conn, simulated_profiles(seed, users, start), now=start)
    except PostgresUnreachable as exc:
        say(f"account profiles skipped: {exc}")
        return False
    say(f"  account profiles in PostgreSQL: {changed:,} inserted or changed")
    return True


def run_demo(settings: Settings, config: DemoConfig, *, fresh: bool = False) -> dict[str, Any]:
    """``fresh``: start over (``demo_state.start_over``) instead of resuming this data directory."""
    from fraud_platform.lib.simulation import SimulationConfig, simulate_chunks
    from fraud_platform.lib.simulation.engine import DEFAULT_CHUNK_DAYS
    from fraud_platform.tools.demo_publish import (
        HeldOut,
        demo_identity,
        publish_once,
        trim_ingested,
    )
    from fraud_platform.tools.demo_replay import (
        RealtimeRun,
        holdout_events,
        realtime_replay,
        snapshot_replay,
    )
    from fraud_platform.tools.demo_state import clear_platform_keys, start_over
    from fraud_platform.tools.instance import prepare_dagster_home
    from fraud_platform.tools.pipeline import (
        LayerResult,
        load_definitions,
        peak_rss_mb,
        prepare_dbt_manifest,
        reset_peak_rss,
        run_layers,
    )
    from fraud_platform.tools.services import services_up, started_services
    from fraud_platform.tools.serving_process import start_scoring_service, stop_scoring_service

    wall = time.perf_counter()
    if fresh:
        start_over(settings, _say)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _say(f"data directory: {settings.data_dir}")
    _say("services:")
    for line in services_up(settings).lines():
        _say(f"  {line}")

    previous_start = _previous_start(settings, config)
    if previous_start is None:  # a new run: not an earlier run's online rows and stores
        if removed := clear_platform_keys(settings):
            _say(f"  online store: {removed:,} keys an earlier run left removed")
    start = previous_start or recent_start(config.days)
    cutoff = start + timedelta(days=config.days - config.holdout_days)
    profiles = seed_simulated_profiles(settings, config.seed, config.users, start, _say)

    from dagster import DagsterInstance

    prepare_dagster_home(settings)
    prepare_dbt_manifest()
    instance = DagsterInstance.get()
    defs = load_definitions()
    log_dir = settings.data_dir / "logs"
    batch_config = {} if profiles else {names.PROFILES_TABLE: {"when_unreachable": "skip"}}
    # the model learns what was known at the cutoff, also on a re-run after the batch path
    # has ingested the held-out period
    asset_config = {names.TRAINING_SET_TABLE: {"as_of": format_timestamp(cutoff)}, **batch_config}
    layers: list[LayerResult] = []

    publishing_peaks: list[float] = []

    def ingest() -> None:
        """Between batches of the simulation: ingest, so the broker can let go of them."""
        publishing_peaks.append(peak_rss_mb())
        for layer in run_layers(
            instance, ("ingestion",), defs=defs, on_progress=_say, log_dir=log_dir,
            asset_config=batch_config,
        ):  # fmt: skip
            layer.layer = f"ingestion while publishing {len(layers) + 1}"
            layers.append(layer)
        reset_peak_rss()

    _say(
        f"simulating {config.days} days, {config.users} users (seed {config.seed}) and "
        f"publishing it, {DEFAULT_CHUNK_DAYS} days at a time ..."
    )
    held_out = HeldOut(cutoff)
    simulated = simulate_chunks(
        SimulationConfig(days=config.days, users=config.users, seed=config.seed, start=start)
    )
    started = time.perf_counter()
    reset_peak_rss()
    published = publish_once(
        settings,
        demo_identity(config, start),
        held_out.collect(simulated),
        cutoff,
        ingest=ingest,
        say=_say,
    )
    simulation, counts = held_out.simulation, held_out.counts
    _say(
        f"  {counts[TRANSACTIONS]:,} transactions, {counts[ACCOUNT_EVENTS]:,} account events, "
        f"{counts[LABELS]:,} labels; held out from {format_timestamp(cutoff)}"
    )
    layers.insert(
        0,
        LayerResult(
            layer="simulate+publish",
            seconds=time.perf_counter() - started - sum(layer.seconds for layer in layers),
            assets=[],
            peak_rss_mb=max([*publishing_peaks, peak_rss_mb()]),
        ),
    )
    layers += run_layers(
        instance, ("ingestion",), defs=defs, on_progress=_say, log_dir=log_dir,
        asset_config=asset_config,
    )  # fmt: skip
    trim_ingested(settings, _say)
    layers += run_layers(
        instance,
        ("transform", "features", "training"),
        defs=defs,
        on_progress=_say,
        log_dir=log_dir,
        asset_config=asset_config,
    )

    model_meta, gate_meta = training_metadata(layers)
    events = holdout_events(simulation.events_by_topic(), cutoff)
    holdout = [e for topic, e in events if topic == TRANSACTIONS]
    stride = max(1, len(holdout) // config.replay_limit)
    sample = holdout[::stride][: config.replay_limit]
    replay_first_day = datetime.now(UTC).date()
    stream: dict[str, Any] = {}
    if config.realtime:
        replay, stream, caught_up = realtime_replay(
            RealtimeRun(settings, instance, defs, log_dir, batch_config, _say),
            events,
            sample,
            simulation.fraud_type_by_transaction,
            champion=gate_meta.get("champion"),
            rate=config.replay_rate,
            identity={**asdict(config), "start": format_timestamp(start)},
        )
        layers += caught_up
    else:
        _say("starting the scoring service ...")
        service = start_scoring_service(settings)
        try:
            _say(
                f"replaying {len(sample):,} of {len(holdout):,} held-out transactions through "
                "/score (against the online store as the batch path left it) ..."
            )
            replay = snapshot_replay(settings, sample, simulation.fraud_type_by_transaction, _say)
        finally:
            stop_scoring_service(service)
    replay_days = days_between(replay_first_day, datetime.now(UTC).date())
    layers += run_layers(instance, ("monitoring",), defs=defs, on_progress=_say, log_dir=log_dir)
    layers += daily_monitoring(instance, defs, replay_days, log_dir)

    ingested = sum(
        int(meta.get("rows_added", 0))
        for layer in layers
        for asset, meta in layer.metadata.items()
        if asset.startswith("bronze/") and asset != names.SCORES_TABLE
    )
    decisions_logged = sum(
        int(layer.metadata.get(names.SCORES_TABLE, {}).get("rows_added", 0)) for layer in layers
    )
    summary: dict[str, Any] = {
        "events_published": sum(published.values()) + replay.get("replay_events_published", 0),
        "events_ingested": ingested,
        "decisions_ingested": decisions_logged,
        "rows_per_asset": {**rows_per_asset(layers), **warehouse_rows(settings)},
        "model_tag": model_meta.get("model_tag"),
        "test_auc": model_meta.get("test_auc_roc"),
        "test_average_precision": model_meta.get("test_average_precision"),
        "champion": gate_meta.get("champion"),
        "promotion": {k: gate_meta.get(k) for k in ("decision", "reason")},
        "checks": {name: ok for layer in layers for name, ok in layer.checks.items()},
        "check_warnings": [name for layer in layers for name in layer.warnings],
        **replay,
        **stream,
        "daily_monitoring": {
            layer.layer.removeprefix("daily_monitoring "): {
                asset: {k: layer.metadata.get(asset, {}).get(k) for k in keys}
                for asset, keys in DAILY_MONITORING_SUMMARY.items()
            }
            for layer in layers
            if layer.layer.startswith("daily_monitoring ")
        },
        "layer_seconds": {layer.layer: round(layer.seconds, 1) for layer in layers},
        "layer_peak_rss_mb": {layer.layer: round(layer.peak_rss_mb) for layer in layers},
        "events_simulated": dict(counts),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "dagster_ui": f"run `fraud-platform ui`, then open http://127.0.0.1:{settings.ui_port}",
        "scoring_service": f"run `fraud-platform serve`, then POST http://127.0.0.1:{settings.service_port}/score",
        "data_dir": str(settings.data_dir),
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    path = Path(settings.data_dir, "demo_summary.json")
    path.write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary, path)
    running = started_services(settings)
    if running:
        _say(f"still running: {' and '.join(running)}; stop with `fraud-platform services down`")
    return summary


__all__ = ["SCALES", "DemoConfig", "run_demo"]
