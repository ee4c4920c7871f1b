"""BentoML's HTTP request metrics for a route answered in front of BentoML's middlewares.

``ScoreRoute`` answers ``/score`` in front of BentoML's stack (``models_bento.shedding.FrontDoor``
installs it behind the shedder), so BentoML's traffic middleware never sees those requests.
``TrafficMetrics`` records what that middleware would have, with its own metric objects:
``bentoml_service_request_total`` and ``..._request_duration_seconds`` (by endpoint and status
code) and ``..._last_request_timestamp_seconds``, after the answer is sent; dashboards and the
README's alert rules keep working. Not recorded: ``..._request_in_progress`` for ``/score``
(``fraud_scorer_shed_requests_total`` and the stage histograms tell an operator more).

Why in front: the stack outside ``ScoreRoute`` (Starlette's error middleware, BentoML's traffic
metrics, OpenTelemetry's excluded-URL check, the timeout) recorded its metrics before the answer
left and cost ~55 µs of server CPU per request, ~4% of a ``/score`` at 300 req/s
(``benchmarks/serving_load.py --quick --baseline-env``, README *Scoring under load*).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("bentoml.fraud_scorer")


def find_traffic_middleware(app: Any) -> Any | None:
    """BentoML's traffic-metrics middleware in the ASGI chain from ``app`` (each middleware
    holds the next as ``.app``); None when metrics are disabled."""
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware

    seen = 0
    while app is not None and seen < 64:
        if isinstance(app, RunnerTrafficMetricsMiddleware):
            return app
        app, seen = getattr(app, "app", None), seen + 1
    return None


class TrafficMetrics:
    """Records one answered request as BentoML's traffic middleware in ``stack`` would."""

    def __init__(self, stack: Any) -> None:
        self._stack = stack
        self._middleware: Any | None = None
        self._found = False

    def record(self, endpoint: str, status: int, seconds: float) -> None:
        middleware = self._lookup()
        if middleware is None:
            return
        from bentoml._internal.context import server_context

        service, version = server_context.bento_name, server_context.bento_version
        runner = server_context.service_name
        middleware.metrics_last_request_timestamp.labels(
            service_name=service, service_version=version, runner_name=runner
        ).set_to_current_time()
        labels = {
            "endpoint": endpoint,
            "service_name": service,
            "service_version": version,
            "http_response_code": status,
            "runner_name": runner,
        }
        middleware.metrics_request_total.labels(**labels).inc()
        middleware.metrics_request_duration.labels(**labels).observe(max(seconds, 0.0))

    def _lookup(self) -> Any | None:
        if not self._found:
            self._found = True
            self._middleware = find_traffic_middleware(self._stack)
            if self._middleware is None:
                log.info("no BentoML traffic metrics in the stack: /score is not counted there")
        middleware = self._middleware
        if middleware is not None and not middleware._is_setup:
            middleware._setup()
        return middleware
