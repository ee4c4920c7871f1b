"""``fraud-platform import`` (a team's own files into bronze, or onto the topics) and
``fraud-platform topics create``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fraud_platform.tools.cli_common import fail
from fraud_platform.tools.cli_common import settings_or_exit as _settings

topics_app = typer.Typer(help="The platform's Kafka topics.", no_args_is_help=True)
EVENT_TYPES = ("transactions", "account_events", "labels")


def import_command(
    event_type: Annotated[str, typer.Argument(help="transactions, account_events or labels.")],
    path: Annotated[Path, typer.Argument(help="A Parquet/CSV file, or a folder of them.")],
    mapping: Annotated[
        Path | None, typer.Option(help="YAML mapping file: columns: {field: column}, defaults.")
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="FIELD=COLUMN: the source column of a contract field."),
    ] = None,
    default: Annotated[
        list[str] | None,
        typer.Option(help="FIELD=VALUE: a constant for a field the data set lacks."),
    ] = None,
    file_format: Annotated[
        str | None, typer.Option("--format", help="parquet or csv (default: by extension).")
    ] = None,
    publish: Annotated[
        bool, typer.Option(help="Produce the rows to the topic instead of writing bronze.")
    ] = False,
) -> None:
    """Import history from Parquet/CSV: mapped onto the event contract, validated, into the
    bronze tables exactly once per file content (a re-import adds nothing); rejects go to the
    dead-letter table."""
    from fraud_platform.lib.ingestion import import_mapping as im
    from fraud_platform.lib.ingestion.import_sources import ImportFailed

    if event_type not in EVENT_TYPES:
        fail(f"unknown event type {event_type!r}; one of {', '.join(EVENT_TYPES)}", 2)
    settings = _settings()
    try:
        spec = im.load_mapping(
            event_type,
            mapping,
            im.parse_pairs(map_ or [], "--map"),
            im.parse_pairs(default or [], "--default"),
        )
        if publish:
            _publish(settings, event_type, path, spec, file_format)
            return
        from fraud_platform.lib.ingestion.importer import import_files
        from fraud_platform.lib.storage.delta import DeltaStore

        store = DeltaStore(settings.delta_uri, settings.delta_storage_options)
        result = import_files(
            event_type, path, spec, store, file_format=file_format, progress=typer.echo
        )
    except (im.MappingError, ImportFailed) as exc:
        fail(str(exc), 2)
    if result.event_dates and result.event_dates[0] < settings.partitions_start:
        typer.echo(
            f"warning: events from {result.event_dates[0]} are before the first feature "
            f"partition {settings.partitions_start}: set FRAUD_PLATFORM_PARTITIONS_START="
            f"{result.event_dates[0]} before materializing the features"
        )
    rate = result.rows / result.elapsed_s if result.elapsed_s else 0.0
    typer.echo(
        json.dumps(
            {
                "event_type": event_type,
                "files": len(result.files),
                "rows": result.rows,
                "accepted": result.accepted,
                "dead_letters": result.rejected,
                "already_imported": sum(f.already_imported for f in result.files),
                "seconds": round(result.elapsed_s, 3),
                "rows_per_s": round(rate),
                "event_dates": [str(d) for d in result.event_dates] if result.event_dates else None,
            }
        )
    )


def _publish(settings, event_type, path, spec, file_format) -> None:  # noqa: ANN001
    from fraud_platform.lib.ingestion.import_sources import source_files
    from fraud_platform.lib.ingestion.importer import mapped_events
    from fraud_platform.lib.kafka import admin as kafka_admin
    from fraud_platform.lib.kafka.producer import Message, produce

    try:
        kafka_admin.check_kafka(settings.kafka_bootstrap)
    except kafka_admin.KafkaUnavailable as exc:
        fail(str(exc))
    create_topics(settings)
    sent = 0
    for file, kind in source_files(path, file_format):
        for payloads, keys in mapped_events(file, kind, spec):
            produce(
                settings.kafka_bootstrap,
                (Message(event_type, p, k) for p, k in zip(payloads, keys, strict=True)),
            )
            sent += len(payloads)
            typer.echo(f"{file.name}: {sent:,} events produced to {event_type}")
    typer.echo(json.dumps({"event_type": event_type, "published": sent}))


def create_topics(settings) -> dict[str, int]:  # noqa: ANN001
    """The platform's topics with its partitions and retention (existing ones are kept)."""
    from fraud_platform.lib.contracts.events import ALL_TOPICS
    from fraud_platform.lib.kafka import admin as kafka_admin
    from fraud_platform.resources.kafka import KafkaResource

    defaults = KafkaResource(bootstrap_servers=settings.kafka_bootstrap)
    kafka_admin.ensure_topics(
        settings.kafka_bootstrap,
        list(ALL_TOPICS),
        partitions=defaults.partitions,
        retention_ms=defaults.retention_ms,
    )
    from confluent_kafka.admin import AdminClient

    listed = AdminClient(kafka_admin.admin_config(settings.kafka_bootstrap)).list_topics(timeout=10)
    return {topic: len(listed.topics[topic].partitions) for topic in ALL_TOPICS}


@topics_app.command("create")
def topics_create() -> None:
    """Create transactions, account_events, labels and scores with the platform's partitions
    and retention (before an external producer auto-creates 1-partition topics)."""
    from fraud_platform.lib.kafka.admin import KafkaUnavailable, check_kafka

    settings = _settings(data_dir=False)
    try:
        check_kafka(settings.kafka_bootstrap)
    except KafkaUnavailable as exc:
        fail(str(exc))
    for topic, partitions in create_topics(settings).items():
        typer.echo(f"{topic}: {partitions} partitions")
