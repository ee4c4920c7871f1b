"""``fraud-platform models ...``: the model registry (BentoML model store + registry table)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fraud_platform.names import MODEL_NAME
from fraud_platform.tools.cli_common import fail, settings_or_exit

models_app = typer.Typer(help="The model registry (BentoML model store).", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """Registered fraud models, newest first, with test metrics; * marks the champion."""
    from bentoml.exceptions import NotFound

    store = _store()
    champion = store.champion(MODEL_NAME)
    try:
        models = store.list(MODEL_NAME)
    except NotFound:
        fail(
            f"no {MODEL_NAME} model in {store.home} yet: train one with "
            "`fraud-platform demo` or `fraud-platform materialize`"
        )
    for model in models:
        metrics = model.info.metadata.get("metrics", {})
        mark = "*" if str(model.tag) == champion else " "
        typer.echo(
            f"{mark} {model.tag}  created {model.info.creation_time:%Y-%m-%d %H:%M}  "
            f"AUC {metrics.get('auc_roc', float('nan')):.4f}  AP {metrics.get('average_precision', float('nan')):.4f}"
        )


def _store():
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.resources.model_store import ModelStoreResource

    settings = settings_or_exit()
    delta = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    return ModelStoreResource(home=str(settings.bentoml_home), delta=delta)


@models_app.command("show")
def models_show(
    tag: Annotated[
        str, typer.Argument(help="Model tag, e.g. fraud_catboost:abc123 or fraud_catboost:latest.")
    ],
) -> None:
    """Everything registered with a model (training-set version, features, metrics, thresholds)
    and its rows in the registry record (registration, gate decisions, promotions, rollbacks)."""
    store = _store()
    model = store.get(tag)
    events = store.events(model.tag.name, str(model.tag))
    typer.echo(
        json.dumps(
            {
                "tag": str(model.tag),
                "labels": model.info.labels,
                **model.info.metadata,
                "registry_events": [
                    {k: e[k] for k in ("event", "reason", "run_id", "recorded_at")} for e in events
                ],
            },
            indent=2,
            default=str,
        )
    )


@models_app.command("promote")
def models_promote(
    tag: Annotated[str, typer.Argument(help="Model tag to make the champion.")],
) -> None:
    """Make a registered model the champion the scoring service loads."""
    store = _store()
    store.promote(tag)
    typer.echo(f"champion of {tag.split(':')[0]}: {store.champion(tag.split(':')[0])}")


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="Model name.")] = MODEL_NAME,
) -> None:
    """Make the previous champion the champion again."""
    try:
        previous = _store().rollback(name)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"champion of {name}: {previous}")


@models_app.command("backtest")
def models_backtest(
    start: Annotated[
        str | None, typer.Option(help="ISO date/time, inclusive (default: end - days).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="ISO date/time, exclusive (default: after the newest row).")
    ] = None,
    days: Annotated[float, typer.Option(help="Range length when --start is not given.")] = 7.0,
    model: Annotated[
        list[str] | None,
        typer.Option(help="Model tag (repeatable); default the champion and the newest model."),
    ] = None,
    source: Annotated[
        str,
        typer.Option(help="training_set (matured, labelled) or silver (any ingested events)."),
    ] = "training_set",
    budget: Annotated[int, typer.Option(help="Review budget per day.")] = 50,
    per_day: Annotated[bool, typer.Option(help="Also print the per-day metrics.")] = False,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV/Parquet with transaction_id, is_fraud: labels of the range that have not "
            "reached the platform (they override the rows' own)."
        ),
    ] = None,
    store_scores: Annotated[
        bool, typer.Option(help="Write the scores to the Delta table serving/backtest_scores.")
    ] = True,
) -> None:
    """Batch-score a time range of history with registered models (same point-in-time features
    and model-input conversion as online) and print their metrics side by side."""
    from fraud_platform.defs.serving import assets as serving
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.lib.training import backtest as backtesting
    from fraud_platform.lib.training.window import LabelFileError, read_label_file
    from fraud_platform.resources import WarehouseResource

    try:
        file_labels = read_label_file(labels) if labels else None
    except LabelFileError as exc:
        fail(str(exc), 2)
    settings = settings_or_exit()
    store = _store()
    delta = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    tags = list(model or []) or backtesting.default_tags(store, MODEL_NAME)
    if not tags:
        typer.echo("no registered model", err=True)
        raise typer.Exit(1)
    result, skipped = serving.run_backtest(
        tags,
        source,
        backtesting.as_utc(start) if start else None,
        backtesting.as_utc(end) if end else None,
        days,
        budget,
        delta,
        warehouse,
        store,
        file_labels,
    )
    for tag, missing in skipped.items():
        typer.echo(f"skipped {tag}: the rows lack its features {missing}", err=True)
    if result is None:
        raise typer.Exit(1)
    range_start, range_end = result.start, result.end
    typer.echo(
        f"backtest {range_start.isoformat()} .. {range_end.isoformat()} (end exclusive), "
        f"source {source}, {result.rows:,} rows, review budget {budget}/day"
    )
    typer.echo(result.markdown())
    if per_day:
        for name, outcome in result.models.items():
            typer.echo(f"\n{name} per day:")
            for day in outcome.per_day:
                typer.echo(
                    f"  {day['day']}  rows {day['rows']:>6,}  positives {day['positives']:>4}  "
                    f"AP {backtesting.fmt(day['average_precision'])}  "
                    f"recall@budget {backtesting.fmt(day['recall_at_budget'])}"
                )
    if store_scores and result.rows:
        version = serving.store_scores(
            delta, result.scores, list(result.models), range_start, range_end
        )
        typer.echo(f"scores written to {serving.BACKTEST_SCORES_TABLE} (Delta version {version})")
