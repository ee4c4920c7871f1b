"""Failed and warned checks reach a real HTTP webhook through check_alert_sensor, evaluated on a
real Dagster instance after a real run whose checks fail and warn."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from fraud_platform.defs.notifications.checks_alerts import check_alert_sensor
from fraud_platform.resources import NotifierResource

pytestmark = pytest.mark.integration
UI = "http://dagster.example:3000"
PARTITION = "2026-11-20"


class Receiver:
    """A webhook on a free local port: records every JSON body; the first ``fail_first``
    requests get a 503 (the client must retry)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                receiver.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.requests <= fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(fail_first=1) as running:
        yield running


daily = dg.DailyPartitionsDefinition(start_date="2026-11-01")


@dg.asset(
    key=["monitoring", "daily_drift_demo"],
    partitions_def=daily,
    check_specs=[
        dg.AssetCheckSpec("features_have_not_drifted", asset=["monitoring", "daily_drift_demo"]),
        dg.AssetCheckSpec("realized_ap_holds", asset=["monitoring", "daily_drift_demo"]),
        dg.AssetCheckSpec("skew_is_small", asset=["monitoring", "daily_drift_demo"]),
    ],
)
def daily_drift_demo() -> dg.MaterializeResult:
    return dg.MaterializeResult(
        check_results=[
            dg.AssetCheckResult(
                check_name="features_have_not_drifted",
                passed=False,
                metadata={"value": 0.4167, "threshold": 0.3, "columns_compared": 48},
            ),
            dg.AssetCheckResult(
                check_name="realized_ap_holds",
                passed=False,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"test_average_precision": 0.512, "min_average_precision": 0.6},
            ),
            dg.AssetCheckResult(
                check_name="skew_is_small", passed=True, metadata={"value": 0.0, "threshold": 0.01}
            ),
        ]
    )


def _tick(instance: dg.DagsterInstance, cursor: str | None, url: str, log: str):
    notifier = NotifierResource(log_path=log, ui_url=UI, webhook_url=url, backoff_s=0.05)
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"notifier": notifier},
        definitions=dg.Definitions(assets=[daily_drift_demo]),
    )
    return check_alert_sensor(context)


def test_check_alert_sensor_posts_failed_and_warned_checks(receiver: Receiver, tmp_path) -> None:
    log = str(tmp_path / "alerts.jsonl")
    with dg.instance_for_test() as instance:
        first = _tick(instance, None, receiver.url, log)  # a new sensor starts from now
        result = dg.materialize([daily_drift_demo], instance=instance, partition_key=PARTITION)
        assert result.success
        run_id = result.run_id
        second = _tick(instance, first.cursor, receiver.url, log)
        third = _tick(instance, second.cursor, receiver.url, log)

    texts = [body["text"] for body in receiver.bodies]
    assert len(texts) == 2, texts  # the passing check sends nothing
    drift = next(t for t in texts if "features_have_not_drifted" in t)
    warned = next(t for t in texts if "realized_ap_holds" in t)
    assert drift.startswith("[ERROR] fraud-platform check failed: features_have_not_drifted")
    assert "value = 0.4167 vs threshold threshold = 0.3" in drift
    assert "columns_compared=48" in drift
    assert f"asset: monitoring/daily_drift_demo, partition: {PARTITION}" in drift
    assert f"run: {UI}/runs/{run_id}" in drift
    assert f"checks: {UI}/assets/monitoring/daily_drift_demo?view=checks" in drift
    assert warned.startswith("[WARN] fraud-platform check warned: realized_ap_holds")
    assert "test_average_precision = 0.512 vs threshold min_average_precision = 0.6" in warned
    assert receiver.requests == 3  # the first attempt got a 503 and was retried
    assert isinstance(third, dg.SkipReason)  # nothing new: nothing sent twice
    logged = [json.loads(line) for line in open(log)]
    assert [row["text"] for row in logged] == texts


def test_check_alert_sensor_fails_loudly_and_redelivers(tmp_path) -> None:
    log = str(tmp_path / "alerts.jsonl")
    with Receiver(fail_first=3) as down, dg.instance_for_test() as instance:
        first = _tick(instance, None, down.url, log)
        dg.materialize([daily_drift_demo], instance=instance, partition_key=PARTITION)
        with pytest.raises(Exception, match="HTTP 503"):
            _tick(instance, first.cursor, down.url, log)  # 3 attempts, all refused
        retried = _tick(instance, first.cursor, down.url, log)  # the cursor did not move
        assert isinstance(retried, dg.SensorResult)
    assert len(down.bodies) == 2 and down.requests == 5
