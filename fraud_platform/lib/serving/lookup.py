"""The online features of one transaction, read for scoring, degrading instead of failing.

``FeatureLookup`` fetches the online features of one transaction and never raises: when Redis
fails or times out the answer is a degraded one (no looked-up features) and says why; a
feature group without a fresh row (none, or older than its TTL) makes it degraded too, except
the groups whose absence is information. What the decision policy does with a degraded answer
is stated in ``policy.py``.

No BentoML or Dagster import here.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError
from redis.retry import Retry

from fraud_platform.lib.contracts.events import CONTROL_CHARACTERS, MAX_STRING_CHARS
from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.online.reader import (
    OnlineFeatureReader,
    OnlineFeatures,
    raise_wrong_type,
)
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.serving.metrics import metrics
from fraud_platform.lib.serving.prefetch import PipeBroken, ScriptPipe, Sent, send_lookup
from fraud_platform.lib.storage.redis_connection import connect

log = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 0.05

# Groups whose absence is information, not an outage: no row means "the user never paid from
# this device", "no fraud known at this merchant" (see catalog). Missing any other group makes
# the answer degraded.
ABSENCE_IS_SIGNAL: frozenset[str] = frozenset(
    g.versioned_name for g in FEATURE_GROUPS if g.absence_is_signal
)


def online_store_client(
    url: str, timeout_s: float = REDIS_TIMEOUT_S, ca_cert: str | None = None
) -> redis.Redis:
    """A Redis client that gives up after ``timeout_s``: no retries.

    redis-py 8 retries a timed-out command 10 times with backoff by default: against a hung
    Redis one lookup then takes ~5 s instead of 50 ms. Measured, hence ``Retry(NoBackoff(), 0)``.
    """
    return connect(
        url,
        ca_cert=ca_cert,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def timeout_of(client: Any) -> float:
    """The socket timeout of ``client``'s connections (``REDIS_TIMEOUT_S`` if it has none)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    return kwargs.get("socket_timeout") or REDIS_TIMEOUT_S


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
        # the event loop's lookups (``send``): a pipe once one is wanted and Redis answers
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pipe: ScriptPipe | None = None
        self._want_pipe = False
        self._opening = False
        self._next_pipe_try = 0.0
        self._timeout_s = timeout_of(client)

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

    def send(self, txn: Mapping[str, Any], service: FeatureService | None = None) -> Sent | None:
        """Start ``lookup(txn, service)`` on the event loop: its script call is written to
        Redis now; once ``sent.reply`` is done, ``lookup(txn, service, sent)`` reads it
        (``prefetch``). None when it cannot be (no pipe yet, Redis being skipped, nothing to
        ask): ``lookup`` then asks Redis itself. Never raises."""
        self._want_pipe = True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        pipe = self._pipe
        if pipe is None or pipe.broken or time.monotonic() < self._skip_until:
            return None
        try:
            reader = self._reader_for(service or self._service)
            return send_lookup(pipe, reader, txn, txn["event_time"], time.perf_counter())
        except Exception as exc:  # noqa: BLE001 - lookup() asks through the client
            log.debug("online lookup not sent ahead: %s: %s", type(exc).__name__, exc)
            return None

    def lookup(
        self,
        txn: Mapping[str, Any],
        service: FeatureService | None = None,
        sent: Sent | None = None,
    ) -> Lookup:
        """Features of ``service`` (default: this lookup's) known strictly before
        ``txn["event_time"]`` (point-in-time, as offline); ``sent``: what ``send`` returned
        for this transaction, its reply done."""
        service = service or self._service
        if sent is not None:
            if sent.reader.service is service:
                return self._read(sent)
            if sent.reply.done() and not sent.reply.cancelled():
                sent.reply.exception()  # another model's lookup: its failure is not this one's
        if self._pipe is not None and self._pipe.broken:  # the connection dropped, or timed out
            self._close_pipe()
        if time.monotonic() < self._skip_until:
            metrics().degraded_answer("online_store_skipped")
            return self._unavailable(f"online store unavailable: {self._last_error}", service)
        started = time.perf_counter()
        try:
            online = self._reader_for(service).get_online_features(txn, now=txn["event_time"])
        except Exception as exc:  # noqa: BLE001 - any Redis failure degrades, loudly (logged)
            return self._failed(exc, started, service)
        metrics().lookup(time.perf_counter() - started)
        if self._want_pipe and self._pipe is None:
            self._open_pipe()
        return self._found(online)

    def _read(self, sent: Sent) -> Lookup:
        """``lookup`` of a transaction ``send`` wrote to the pipe: its reply. The lookup metric
        is Redis' time: from the write to the reply's arrival."""
        reader = sent.reader
        try:
            try:
                reply = sent.reply.result()
            except PipeBroken:  # behind a request that failed: as if Redis was skipped
                metrics().degraded_answer("online_store_skipped")
                return self._unavailable(
                    f"online store unavailable: {self._last_error}", reader.service
                )
            except NoScriptError:  # the script cache was flushed: the client reloads it
                fetched, arrived = reader.fetch(sent.keys, sent.now), time.perf_counter()
            except redis.ResponseError as exc:
                raise_wrong_type(exc)
                raise
            else:
                fetched, arrived = reply.value, reply.arrived
            online = reader.result(sent.keys, fetched, sent.now)
        except Exception as exc:  # noqa: BLE001 - as in lookup
            return self._failed(exc, sent.started, reader.service)
        metrics().lookup(arrived - sent.started)
        return self._found(online)

    def _failed(self, exc: Exception, started: float, service: FeatureService) -> Lookup:
        pipe = self._pipe
        if pipe is not None and (pipe.broken or not isinstance(exc, PIPE_KEEPS)):
            self._close_pipe()  # the lookups in it meanwhile: as if Redis was skipped
        metrics().lookup(time.perf_counter() - started, exc)
        metrics().degraded_answer("online_store_error")
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._skip_until = time.monotonic() + self._retry_after_s
        log.error("online feature lookup failed, scoring degraded: %s", self._last_error)
        return self._unavailable(f"online store unavailable: {self._last_error}", service)

    def _open_pipe(self) -> None:
        """After a lookup through the client succeeded (any thread): open a pipe on the loop."""
        loop = self._loop
        if loop is None or self._opening or time.monotonic() < self._next_pipe_try:
            return
        self._opening = True
        try:
            asyncio.run_coroutine_threadsafe(self._open_on_loop(loop), loop)
        except RuntimeError:  # the loop is closed
            self._opening = False

    async def _open_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            pipe = await ScriptPipe.open(self._client, loop, self._timeout_s)
        except Exception as exc:  # noqa: BLE001 - lookups go through the client meanwhile
            log.warning("online lookups not sent ahead: %s: %s", type(exc).__name__, exc)
            self._next_pipe_try = time.monotonic() + self._retry_after_s
            return
        finally:
            self._opening = False
        if pipe is None:
            self._want_pipe = False  # not for this client (TLS, a cluster)
        else:
            self._pipe = pipe

    def _close_pipe(self) -> None:
        """Close the pipe (any thread: closed on its loop)."""
        pipe, self._pipe = self._pipe, None
        if pipe is None or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(pipe.close)
        except RuntimeError:  # the loop is closed, and the pipe's transport with it
            pass

    def close(self) -> None:
        """Close the pipe (the client is the caller's)."""
        self._want_pipe = False
        self._close_pipe()

    def _found(self, online: OnlineFeatures) -> Lookup:
        missing = [g for g in online.missing_groups if g not in self._absence_is_signal]
        if missing:
            metrics().degraded_answer("missing_features", missing)
        reason = f"no online features for groups: {', '.join(missing)}" if missing else None
        return Lookup(
            values=online.values,
            age_seconds=online.age_seconds,
            degraded_reason=loggable_reason(reason) if reason else None,
        )


# failures that leave a pipe's replies in step (a reply that is an error, rows not as expected)
PIPE_KEEPS = (redis.ResponseError, ValueError)

_CONTROL_RUN = re.compile(f"[{CONTROL_CHARACTERS}]+")


def loggable_reason(reason: str) -> str:
    """``reason`` as the scores contract takes it (``degraded_reason`` is checked like an id):
    control characters (an exception's line breaks) as spaces, at most MAX_STRING_CHARS. A
    longer reason sent every decision of a year-scale demo to the dead-letter table."""
    flat = _CONTROL_RUN.sub(" ", reason).strip() or "unknown"
    return flat if len(flat) <= MAX_STRING_CHARS else flat[: MAX_STRING_CHARS - 1] + "…"
