"""The online features of one transaction, read for scoring, degrading instead of failing.

``FeatureLookup`` fetches the online features of one transaction and never raises: when Redis
fails or times out the answer is a degraded one (no looked-up features) and says why; a
feature group without a fresh row (none, or older than its TTL) makes it degraded too, except
the groups whose absence is information. What the decision policy does with a degraded answer
is stated in ``policy.py``.

No BentoML or Dagster import here.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fraud_platform.lib.contracts.events import CONTROL_CHARACTERS, MAX_STRING_CHARS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.online.reader import OnlineFeatureReader
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.serving.metrics import metrics

log = logging.getLogger(__name__)

# Groups whose absence is information, not an outage: no row means "the user never paid from
# this device", "no fraud known at this merchant" (see catalog). Missing any other group makes
# the answer degraded.
ABSENCE_IS_SIGNAL: frozenset[str] = frozenset(
    g.versioned_name for g in FEATURE_GROUPS if g.absence_is_signal
)


@dataclass(frozen=True)
class Lookup:
    """Features found for one transaction and how fresh each group is."""

    values: dict[str, Any]
    age_seconds: dict[str, float | None]
    degraded_reason: str | None = None

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


class FeatureLookup:
    """Reads a feature service's groups for one transaction (one Redis round trip): the
    scoring model's service (``lookup(txn, scoring.service)``), else the one given here.

    Never raises on Redis trouble: the lookup comes back empty with a ``degraded_reason``. After
    a failure Redis is not tried again for ``retry_after_s``, so an outage costs one timeout per
    interval rather than one per request.
    """

    def __init__(
        self,
        client: Any,  # redis.Redis, built with a short socket timeout
        service: FeatureService = FRAUD_SCORING_V1,
        *,
        retry_after_s: float = 1.0,
        absence_is_signal: frozenset[str] = ABSENCE_IS_SIGNAL,
    ) -> None:
        self._client = client
        self._service = service
        self._reader = OnlineFeatureReader(client, service)
        self._retry_after_s = retry_after_s
        self._absence_is_signal = absence_is_signal
        self._skip_until = 0.0
        self._last_error = ""

    def _reader_for(self, service: FeatureService) -> OnlineFeatureReader:
        reader = self._reader  # one read: another thread may swap it meanwhile
        if reader.service is not service:  # a model pinned to another service was swapped in
            reader = self._reader = OnlineFeatureReader(self._client, service)
        return reader

    @staticmethod
    def _unavailable(reason: str, service: FeatureService) -> Lookup:
        groups = [g.versioned_name for g in service.groups]
        return Lookup(
            values={}, age_seconds=dict.fromkeys(groups), degraded_reason=loggable_reason(reason)
        )

    def lookup(self, txn: Mapping[str, Any], service: FeatureService | None = None) -> Lookup:
        """Features of ``service`` (default: this lookup's) known strictly before
        ``txn["event_time"]`` (point-in-time, as offline)."""
        service = service or self._service
        if time.monotonic() < self._skip_until:
            metrics().degraded_answer("online_store_skipped")
            return self._unavailable(f"online store unavailable: {self._last_error}", service)
        started = time.perf_counter()
        try:
            online = self._reader_for(service).get_online_features(txn, now=txn["event_time"])
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades, loudly (logged)
            metrics().lookup(time.perf_counter() - started, exc)
            metrics().degraded_answer("online_store_error")
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._skip_until = time.monotonic() + self._retry_after_s
            log.error("online feature lookup failed, scoring degraded: %s", self._last_error)
            return self._unavailable(f"online store unavailable: {self._last_error}", service)
        metrics().lookup(time.perf_counter() - started)
        missing = [g for g in online.missing_groups if g not in self._absence_is_signal]
        if missing:
            metrics().degraded_answer("missing_features", missing)
        reason = f"no online features for groups: {', '.join(missing)}" if missing else None
        return Lookup(
            values=online.values,
            age_seconds=online.age_seconds,
            degraded_reason=loggable_reason(reason) if reason else None,
        )


_CONTROL_RUN = re.compile(f"[{CONTROL_CHARACTERS}]+")


def loggable_reason(reason: str) -> str:
    """``reason`` as the scores contract takes it (``degraded_reason`` is checked like an id):
    control characters (an exception's line breaks) as spaces, at most MAX_STRING_CHARS. A
    longer reason sent every decision of a year-scale demo to the dead-letter table."""
    flat = _CONTROL_RUN.sub(" ", reason).strip() or "unknown"
    return flat if len(flat) <= MAX_STRING_CHARS else flat[: MAX_STRING_CHARS - 1] + "…"
