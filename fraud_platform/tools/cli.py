"""The ``fraud-platform`` command line."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated

import typer

from fraud_platform.settings import Settings
from fraud_platform.tools.cli_bento import bento_app
from fraud_platform.tools.cli_common import fail as _fail
from fraud_platform.tools.cli_common import settings_or_exit as _settings
from fraud_platform.tools.cli_evaluate import evaluate
from fraud_platform.tools.cli_import import import_command, topics_app
from fraud_platform.tools.cli_models import models_app
from fraud_platform.tools.layers import LAYERS

# Rich tracebacks with locals would render the whole simulation on an error: minutes, GBs.
app = typer.Typer(
    help="Real-time fraud-detection ML platform on Dagster.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
services_app = typer.Typer(
    help="Embedded services: Kafka-protocol broker and Redis.", no_args_is_help=True
)
features_app = typer.Typer(help="The feature registry.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(features_app, name="features")
app.add_typer(models_app, name="models")
app.add_typer(bento_app, name="bento")
app.add_typer(topics_app, name="topics")
app.command("import")(import_command)
app.command("evaluate")(evaluate)


def _kafka_hint(settings: Settings) -> str:
    if settings.kafka_embedded:
        return "start it with `fraud-platform services up`"
    return "check KAFKA_BOOTSTRAP_SERVERS"


def _require_kafka(settings: Settings) -> None:
    """Fail in a second with what to do, instead of in the middle of a run."""
    from fraud_platform.lib.kafka.admin import KafkaUnavailable, check_kafka

    try:
        check_kafka(settings.kafka_bootstrap)
    except KafkaUnavailable as exc:
        _fail(f"{exc}; {_kafka_hint(settings)}")


@contextmanager
def _service_errors() -> Iterator[None]:
    """Starting the embedded services fails with one line, not a traceback."""
    from fraud_platform.lib.kafka.admin import KafkaUnavailable
    from fraud_platform.tools.brokers import BrokerStartError
    from fraud_platform.tools.services import ServicesError

    try:
        yield
    except (KafkaUnavailable, BrokerStartError, ServicesError) as exc:
        _fail(str(exc))


@contextmanager
def _failing_with(error: type[Exception], code: int) -> Iterator[None]:
    """``error`` ends the command with its message and ``code``, not a traceback."""
    try:
        yield
    except error as exc:
        _fail(str(exc), code)


def _known_layers(names: list[str] | None) -> list[str] | None:
    unknown = [name for name in names or [] if name not in LAYERS]
    if unknown:
        _fail(f"unknown layer(s) {unknown}; known: {', '.join(LAYERS)}", 2)
    return names


@app.command()
def demo(
    scale: Annotated[
        str,
        typer.Option(
            help="A size preset (days x users): default 30 x 2,000, quarter 90 x 5,000, year "
            "365 x 2,000 (see the README's scale section); --days/--users override it."
        ),
    ] = "default",
    days: Annotated[
        int | None, typer.Option(help="Days of traffic to simulate (default: the scale's).")
    ] = None,
    users: Annotated[
        int | None, typer.Option(help="Simulated users (default: the scale's).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Simulation seed.")] = 7,
    holdout_days: Annotated[
        int,
        typer.Option(help="Final days kept from the batch path and replayed through /score."),
    ] = 2,
    replay_limit: Annotated[
        int, typer.Option(help="At most this many held-out transactions are scored.")
    ] = 2000,
    realtime: Annotated[
        bool,
        typer.Option(
            "--realtime/--snapshot",
            help="Publish the held-out period while the stream worker keeps the online store "
            "current, scoring each sampled transaction as it arrives (the default); "
            "--snapshot scores it against the online store the batch path left (faster).",
        ),
    ] = True,
    replay_rate: Annotated[
        int,
        typer.Option(help="Held-out events published per second (event-time order) in the replay."),
    ] = 400,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Start over: stop the services of the data directory, delete it and the "
            "platform's keys in Redis (online rows, stream stores). A held-out period an "
            "earlier run replayed is not replayed again without it.",
        ),
    ] = False,
) -> None:
    """Run the whole pipeline end to end on the embedded defaults and print a summary."""
    from fraud_platform.tools.demo import SCALES, DemoConfig, run_demo
    from fraud_platform.tools.demo_state import NotADataDirectory

    if scale not in SCALES:
        _fail(f"unknown scale {scale!r}; known: {', '.join(SCALES)}", 2)
    settings = _settings()
    with _service_errors(), _failing_with(NotADataDirectory, 2):
        run_demo(
            settings,
            DemoConfig(
                days=days if days is not None else SCALES[scale][0],
                users=users if users is not None else SCALES[scale][1],
                seed=seed,
                holdout_days=holdout_days,
                replay_limit=replay_limit,
                realtime=realtime,
                replay_rate=replay_rate,
            ),
            fresh=fresh,
        )


@app.command()
def simulate(
    days: Annotated[int, typer.Option(help="Days of traffic.")] = 30,
    users: Annotated[int, typer.Option(help="Number of users.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same events.")] = 7,
    rate: Annotated[float, typer.Option(help="Multiplier of ordinary transaction volume.")] = 1.0,
    drift_at: Annotated[
        int | None, typer.Option(help="Day from which fraud mix and behaviour change.")
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="standard: the full contract, five fraud scenarios, account events, profiles. "
            "thin: card payments with only card, terminal, amount and time (other fields at "
            "contract defaults), terminal and card compromises, labels 7 days later; --users "
            "is the number of cards, --rate and --drift-at do not apply."
        ),
    ] = "standard",
) -> None:
    """Simulate traffic and publish it to the transactions, account_events and labels topics;
    upsert the users' account profiles into PostgreSQL (skipped if it is not reachable)."""
    if profile not in ("standard", "thin"):
        _fail(f"unknown profile {profile!r}; known: standard, thin", 2)
    settings = _settings(data_dir=False)
    _require_kafka(settings)

    from fraud_platform.lib.contracts.events import ALL_TOPICS
    from fraud_platform.lib.kafka import admin as kafka_admin
    from fraud_platform.lib.simulation import (
        Simulation,
        SimulationConfig,
        simulate_chunks,
    )
    from fraud_platform.lib.simulation import publish_chunks as publish
    from fraud_platform.lib.simulation.thin import ThinConfig, contract_events, simulate_thin
    from fraud_platform.tools.demo import recent_start, seed_simulated_profiles

    kafka_admin.ensure_topics(settings.kafka_bootstrap, list(ALL_TOPICS))
    start = recent_start(days)
    if profile == "thin":
        thin = simulate_thin(ThinConfig(days=days, cards=users, seed=seed, start=start))
        events = contract_events(thin)
        chunks = [
            Simulation(
                transactions=events["transactions"],
                account_events=[],
                labels=events["labels"],
                fraud_type_by_transaction={},
            )
        ]
    else:  # a week at a time: memory does not grow with days x users
        chunks = simulate_chunks(
            SimulationConfig(
                days=days, users=users, seed=seed, rate=rate, drift_at=drift_at, start=start
            )
        )
    end = start + timedelta(days=days)
    counts = publish(
        chunks,
        settings.kafka_bootstrap,
        until=end,
        progress=lambda done: typer.echo(f"\r{done:,}", nl=False),
    )
    typer.echo(f"\npublished {json.dumps(counts)} to {settings.kafka_bootstrap}")
    if profile == "standard":
        seed_simulated_profiles(settings, seed, users, start, typer.echo)


@app.command()
def materialize(
    layer: Annotated[
        list[str] | None,
        typer.Option(
            help=f"Layer to run (repeatable), one of: {', '.join(LAYERS)}; default all, in that "
            "order.",
            callback=_known_layers,
        ),
    ] = None,
    config: Annotated[
        list[str] | None,
        typer.Option(
            help="ASSET=JSON run config of one asset (repeatable), e.g. "
            'models/fraud_catboost=\'{"search_trials": 10, "search_time_budget_s": 600}\''
        ),
    ] = None,
) -> None:
    """Materialize the asset graph in-process (same Definitions and instance as the UI)."""
    asset_config: dict[str, dict] = {}
    for item in config or []:
        asset, sep, text = item.partition("=")
        try:
            value = json.loads(text) if sep else None
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"{item!r}: the config is not JSON ({exc})") from None
        if not isinstance(value, dict):
            raise typer.BadParameter(f"{item!r}: expected ASSET={{...JSON object...}}")
        asset_config[asset] = value
    settings = _settings()
    if "ingestion" in (layer or LAYERS):
        _require_kafka(settings)

    from dagster import DagsterInstance

    from fraud_platform.tools.instance import prepare_dagster_home
    from fraud_platform.tools.pipeline import prepare_dbt_manifest, run_layers

    prepare_dagster_home(settings)
    prepare_dbt_manifest()
    from fraud_platform.tools.cli_materialize import finish_materialize, profiles_source_config

    asset_config = profiles_source_config(settings, layer or list(LAYERS), asset_config)
    finish_materialize(
        lambda: run_layers(DagsterInstance.get(), layer or list(LAYERS), asset_config=asset_config)
    )


@app.command()
def serve(
    port: Annotated[
        int | None, typer.Option(help="Port (default FRAUD_PLATFORM_SERVICE_PORT or 3030).")
    ] = None,
) -> None:
    """Run the BentoML scoring service in the foreground."""
    from fraud_platform.tools.serving_process import REPO_ROOT, serve_command, service_env

    settings = _settings()
    port = port or settings.service_port
    subprocess.run(serve_command(port), cwd=REPO_ROOT, env=service_env(settings), check=False)


@app.command()
def ui(port: Annotated[int | None, typer.Option(help="Port of the Dagster UI.")] = None) -> None:
    """Start ``dagster dev`` on this project (UI at http://127.0.0.1:PORT)."""
    from fraud_platform.tools.instance import prepare_dagster_home
    from fraud_platform.tools.pipeline import (
        dagster_dev_command,
        env_with_venv_on_path,
        prepare_dbt_manifest,
    )
    from fraud_platform.tools.serving_process import REPO_ROOT

    settings = _settings()
    prepare_dagster_home(settings)
    prepare_dbt_manifest()
    subprocess.run(
        dagster_dev_command(port or settings.ui_port),
        cwd=REPO_ROOT,
        env=env_with_venv_on_path(dict(os.environ)),
        check=False,
    )


@app.command()
def stream() -> None:
    """Run the stream worker: keeps the online store current from the topics (every feature
    group with stream=True), until Ctrl-C. Run more of them to share the partitions."""
    from fraud_platform.tools.stream_worker import ensure_platform_topics, run

    settings = _settings()
    _require_kafka(settings)
    ensure_platform_topics(settings.kafka_bootstrap)
    run(
        settings.kafka_bootstrap,
        settings.redis_url,
        settings.services_dir / "stream" / "state",
        redis_ca_cert=settings.redis_ca_cert,
    )


@services_app.command("up")
def services_up(
    stream: Annotated[
        bool, typer.Option(help="Also start the stream worker (`fraud-platform stream`).")
    ] = True,
) -> None:
    """Start the embedded broker (and a private Redis when REDIS_URL is on this machine and
    nothing answers there) and the stream worker; check external ones."""
    from fraud_platform.tools.services import services_up as up

    settings = _settings()
    with _service_errors():
        status = up(settings, stream_worker=stream)
    for line in status.lines():
        typer.echo(line)


@services_app.command("down")
def services_down() -> None:
    """Stop the embedded services this data directory started (never a Redis it did not start)."""
    from fraud_platform.tools.services import services_down as down

    stopped = down(_settings())
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@services_app.command("status")
def services_status() -> None:
    """Show whether Kafka and Redis answer (exit code 1 if one does not)."""
    from fraud_platform.tools.services import services_status as status

    state = status(_settings(data_dir=False))
    for line in state.lines():
        typer.echo(line)
    if not (state.kafka_reachable and state.redis_reachable):
        raise typer.Exit(1)


@features_app.command("list")
def features_list() -> None:
    """Every feature group and feature with its definition, then the feature services."""
    from fraud_platform.lib.features.catalog import FEATURE_GROUPS
    from fraud_platform.lib.features.services import FEATURE_SERVICES

    for group in FEATURE_GROUPS:
        typer.echo(
            f"{group.versioned_name}  entity={group.entity.name}({','.join(group.entity.join_keys)}) "
            f"source={group.source} ttl={group.ttl} owner={group.owner}\n  {group.description}"
        )
        for f in group.features:
            where = f" where {' '.join(map(str, f.where))}" if f.where else ""
            typer.echo(
                f"    {f.name:40s} {f.function}({f.column or '*'}) over {f.window or 'lifetime'}{where} [{f.dtype}]"
            )
    for service in FEATURE_SERVICES:
        typer.echo(
            f"service {service.name}: {len(service.model_features)} model features from "
            f"{', '.join(service.group_names)} and request features"
        )


if __name__ == "__main__":
    app()
