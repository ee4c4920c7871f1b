"""What every ``fraud-platform`` command shares: one-line errors and the settings."""

from __future__ import annotations

from typing import NoReturn

import typer

from fraud_platform.settings import Settings, SettingsError


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(*, data_dir: bool = True) -> Settings:
    """The settings, or a one-line error (exit 2) naming the variable that is wrong."""
    try:
        settings = Settings.from_env()
        if data_dir:
            settings.ensure_data_dir()
    except SettingsError as exc:
        fail(str(exc), 2)
    return settings
