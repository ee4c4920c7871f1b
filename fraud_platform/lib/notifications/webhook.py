"""A Slack-compatible webhook client (``{"text": ...}``) with a timeout and bounded retries."""

from __future__ import annotations

import time

import httpx

RETRIED_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class WebhookFailed(RuntimeError):
    """The webhook did not accept a message after every attempt."""


def post_text(
    url: str,
    text: str,
    *,
    timeout_s: float = 5.0,
    attempts: int = 3,
    backoff_s: float = 0.5,
    client: httpx.Client | None = None,
) -> int:
    """POST ``{"text": text}``; retry connection errors, timeouts and 408/425/429/5xx with
    exponential backoff; raise ``WebhookFailed`` saying why when every attempt failed, or at
    once on another 4xx (retrying a rejected message cannot help). Returns the status code."""
    if attempts < 1:
        raise ValueError("attempts must be >= 1")
    owned = client is None
    http = client or httpx.Client(timeout=timeout_s)
    problem = ""
    try:
        for attempt in range(attempts):
            if attempt:
                time.sleep(backoff_s * 2 ** (attempt - 1))
            try:
                response = http.post(url, json={"text": text}, timeout=timeout_s)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return response.status_code
            problem = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code not in RETRIED_STATUS:
                break
    finally:
        if owned:
            http.close()
    raise WebhookFailed(f"webhook did not accept the message ({problem})")
