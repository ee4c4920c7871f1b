"""Where check alerts go: an alerts log next to the data, plus the webhook when configured."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg

from fraud_platform.lib.notifications.webhook import post_text


class NotifierResource(dg.ConfigurableResource):
    """Appends every message to ``log_path`` (JSON lines), then posts it to ``webhook_url``
    (Slack-compatible ``{"text": ...}``) with a timeout and retries; ``ui_url`` is the Dagster
    UI the messages link to."""

    log_path: str
    ui_url: str
    webhook_url: str | None = None
    timeout_s: float = 5.0
    attempts: int = 3
    backoff_s: float = 0.5

    def notify(self, title: str, text: str) -> None:
        """Raises ``WebhookFailed`` when the webhook refused the message after every attempt."""
        path = Path(self.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps({"at": time.time(), "title": title, "text": text}) + "\n")
        if self.webhook_url:
            post_text(
                self.webhook_url,
                text,
                timeout_s=self.timeout_s,
                attempts=self.attempts,
                backoff_s=self.backoff_s,
            )
