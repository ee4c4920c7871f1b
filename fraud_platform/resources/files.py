"""Local files the platform keeps next to its data: monitoring profiles and alerts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import httpx


class FilesResource(dg.ConfigurableResource):
    root: str

    def path(self, *parts: str) -> Path:
        path = Path(self.root, *parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class AlertResource(dg.ConfigurableResource):
    """Where failures are announced: always an alerts log, plus a webhook when configured
    (Slack-compatible JSON ``{"text": ...}``)."""

    log_path: str
    webhook_url: str | None = None
    timeout_s: float = 5.0

    def send(self, title: str, details: dict[str, Any]) -> None:
        record = {"at": time.time(), "title": title, **details}
        path = Path(self.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps(record, default=str) + "\n")
        if self.webhook_url:
            response = httpx.post(
                self.webhook_url,
                json={"text": f"{title}\n{json.dumps(details, default=str)}"},
                timeout=self.timeout_s,
            )
            response.raise_for_status()
