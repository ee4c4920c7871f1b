"""What ``fraud-platform materialize`` adds around ``run_layers``: the PostgreSQL source skipped
with one line when unreachable, and an exit code that tells a gated or failed run apart."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import typer

from fraud_platform import names
from fraud_platform.settings import Settings
from fraud_platform.tools.cli_common import fail
from fraud_platform.tools.pipeline import LayerFailed, LayerResult


def profiles_source_config(
    settings: Settings, layers: Sequence[str], asset_config: dict[str, dict]
) -> dict[str, dict]:
    """``asset_config`` plus ``when_unreachable: skip`` for the profiles source when the
    ingestion layer runs and PostgreSQL does not answer (unless the caller configured it)."""
    if "ingestion" not in layers or names.PROFILES_TABLE in asset_config:
        return asset_config
    from fraud_platform.lib.ingestion.profiles_source import PostgresUnreachable, connection

    try:
        with connection(settings.profiles_pg_url or "", timeout_s=3):
            return asset_config
    except PostgresUnreachable as exc:
        typer.echo(f"{exc}: skipping the account profiles source")
    return {**asset_config, names.PROFILES_TABLE: {"when_unreachable": "skip"}}


def finish_materialize(run: Callable[[], list[LayerResult]]) -> None:
    """Run the layers; exit 1 with one line when a step failed or a blocking check failed."""
    try:
        results = run()
    except LayerFailed as exc:
        fail(str(exc))
    blocked = [name for result in results for name in result.blocked]
    if blocked:
        fail(f"blocking check(s) failed, what they gate was not materialized: {', '.join(blocked)}")
