"""``fraud-platform evaluate``: train until a cutoff, evaluate on a later window (the protocol of
``lib/training/protocol.py``), write a JSON report and plots."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from fraud_platform.lib.training.card_precision import DEFAULT_K
from fraud_platform.tools.cli_common import fail, settings_or_exit


def _when(value: str, option: str) -> datetime:
    from fraud_platform.lib.training.backtest import as_utc

    try:
        return as_utc(value)
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r} is not an ISO date or date-time") from None


def _model_config(text: str | None) -> Any:
    """The ``models/fraud_catboost`` asset config (same fields as ``materialize --config``)."""
    from pydantic import ValidationError

    from fraud_platform.defs.training.assets import ModelConfig

    try:
        values = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--model-config is not JSON ({exc})") from None
    if not isinstance(values, dict):
        raise typer.BadParameter("--model-config must be a JSON object")
    try:
        return ModelConfig(**values).pipeline_config()
    except ValidationError as exc:
        raise typer.BadParameter(f"--model-config: {exc}") from None


def evaluate(
    train_until: Annotated[
        str,
        typer.Option(help="Training cutoff (ISO, UTC by default): train on what was known then."),
    ],
    test_start: Annotated[
        str, typer.Option(help="Test window start (ISO, inclusive), >= the cutoff.")
    ],
    test_end: Annotated[str, typer.Option(help="Test window end (ISO, exclusive).")],
    exclude_known_compromised: Annotated[
        bool,
        typer.Option(help="Leave out cards with a fraud label known before the window."),
    ] = False,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV/Parquet with transaction_id, is_fraud (optional fraud_type, label_time): the "
            "window's labels when they have not reached the platform."
        ),
    ] = None,
    k: Annotated[
        int, typer.Option(help="Cards reviewed per day for card precision@k.")
    ] = DEFAULT_K,
    refit: Annotated[
        bool,
        typer.Option(help="Refit the selected model on all matured rows up to the cutoff."),
    ] = False,
    maturity_days: Annotated[
        float, typer.Option(help="An unlabelled transaction counts as legitimate after this long.")
    ] = 7.0,
    model_config: Annotated[
        str | None,
        typer.Option(help="JSON config of models/fraud_catboost, e.g. '{\"iterations\": 200}'."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Report folder (default <data dir>/evaluations/<cutoff>_<start>_<end>)."),
    ] = None,
) -> None:
    """Train on the data known at --train-until, score [--test-start, --test-end) with the served
    decision policy, and report AUC, AP, precision/recall at the review budget and card
    precision@k per day (report.json, scores.parquet and PNG plots)."""
    from fraud_platform.lib.training import protocol
    from fraud_platform.lib.training.window import LabelFileError, read_label_file

    pipeline_config = _model_config(model_config)
    try:
        config = protocol.ProtocolConfig(
            train_until=_when(train_until, "--train-until"),
            test_start=_when(test_start, "--test-start"),
            test_end=_when(test_end, "--test-end"),
            maturity=timedelta(days=maturity_days),
            exclude_known_compromised=exclude_known_compromised,
            card_k=k,
            refit=refit,
            pipeline=pipeline_config,
        )
    except ValueError as exc:
        fail(str(exc), 2)
    try:
        file_labels = read_label_file(labels) if labels else None
    except LabelFileError as exc:
        fail(str(exc), 2)
    settings = settings_or_exit()
    transactions, platform_labels, group_rows, service = _silver_and_features(settings)
    try:
        result = protocol.run_protocol(
            transactions,
            platform_labels,
            group_rows,
            service,
            config,
            file_labels=file_labels,
            log=typer.echo,
        )
    except ValueError as exc:
        fail(str(exc))
    folder = out or settings.data_dir / "evaluations" / _folder_name(config)
    path = protocol.write_report(result, folder)
    for line in summary_lines(result.report):
        typer.echo(line)
    typer.echo(f"report: {path} (plots and scores.parquet beside it)")


def _folder_name(config: Any) -> str:
    stamps = (config.train_until, config.test_start, config.test_end)
    return "_".join(t.strftime("%Y%m%dT%H%M%S") for t in stamps)


def _silver_and_features(settings: Any) -> tuple[Any, Any, dict[str, Any], Any]:
    """Silver transactions and labels, the feature rows of the served service, the service."""
    import duckdb

    from fraud_platform import names
    from fraud_platform.defs.training.assets import SERVICE
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.resources import WarehouseResource

    hint = "run `fraud-platform materialize --layer transform --layer features` first"
    if not settings.warehouse_path.exists():
        fail(f"no warehouse at {settings.warehouse_path}: {hint}")
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    try:
        transactions = warehouse.table("fct_transactions")
        labels = warehouse.table("fct_labels")
    except duckdb.Error as exc:
        fail(f"silver tables unreadable ({exc}): {hint}")
    delta = DeltaStore(settings.delta_uri, settings.delta_storage_options)
    tables = {g.versioned_name: names.feature_table(g.versioned_name) for g in SERVICE.groups}
    missing = [table for table in tables.values() if not delta.exists(table)]
    if missing:
        fail(f"feature tables {missing} do not exist: {hint}")
    return transactions, labels, {g: delta.read(t) for g, t in tables.items()}, SERVICE


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report's headline, as the command prints it."""
    training, window, metrics = report["training_set"], report["window"], report["metrics"]
    card, policy = report["card_precision"], metrics.get("policy") or {}
    lines = [
        f"trained on {training['rows']:,} matured rows ({training['positives']:,} fraud), "
        f"{training['first_event_time']} .. {training['last_event_time']}, cutoff "
        f"{report['protocol']['train_until']}"
        + (" (refit on all of them)" if report["protocol"]["refit"] else ""),
        f"window {report['protocol']['test_start']} .. {report['protocol']['test_end']}: "
        f"{window['transactions']:,} transactions ({window['known_compromised']['transactions']:,} "
        f"of them on {window['known_compromised']['cards']:,} known-compromised cards left out), "
        f"{window['scored']:,} scored ({window['positives']:,} fraud); labels {window['labels']}",
        f"AUC {_fmt(metrics['auc_roc'])}  AP {_fmt(metrics['average_precision'])}  "
        f"precision@budget {_fmt(metrics['precision_at_budget'])}  "
        f"recall@budget {_fmt(metrics['recall_at_budget'])} "
        f"({report['protocol']['review_budget_per_day']}/day)",
        f"served policy: {policy.get('decisions', {})}, precision/recall of flagged "
        f"{_fmt(policy.get('precision_flagged'))} / {_fmt(policy.get('recall_flagged'))}",
        f"card precision@{card['k']}: mean {_fmt(card['mean'])}",
    ]
    lines += [
        f"  {d['day']}  cards {d['cards']:>6,}  compromised {d['compromised_cards']:>4,}  "
        f"caught {d['caught']:>4,}  card precision {d['card_precision']:.4f}"
        for d in card["days"]
    ]
    return lines
