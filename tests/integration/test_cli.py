"""The command line, against real services: embedded broker lifecycle and clear errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from fraud_platform.tools.cli import app
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["demo"],
        ["simulate"],
        ["materialize"],
        ["serve"],
        ["ui"],
        ["services"],
        ["services", "up"],
        ["services", "down"],
        ["services", "status"],
        ["features", "list"],
        ["models", "list"],
        ["models", "show"],
        ["models", "promote"],
        ["models", "rollback"],
        ["models", "backtest"],
    ],
)
def test_cli_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_cli_features_list_shows_every_group() -> None:
    result = runner.invoke(app, ["features", "list"])
    assert result.exit_code == 0
    for name in [
        "user_txn_velocity_v1",
        "card_velocity_v1",
        "account_security_v1",
        "user_device_history_v1",
    ]:
        assert name in result.output
    assert "last_password_change_time" in result.output
    assert "user_txn_velocity_v2" in result.output
    assert "service fraud_scoring_v1: 58 model features from user_txn_velocity_v1," in result.output
    assert "service fraud_scoring_v2: 59 model features from user_txn_velocity_v2," in result.output


def test_cli_status_reports_an_unreachable_kafka(tmp_path, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    result = runner.invoke(app, ["services", "status"])
    assert result.exit_code == 1
    assert f"Kafka not reachable at 127.0.0.1:{port}" in result.output


def test_cli_services_up_status_down_embedded_broker(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FRAUD_PLATFORM_KAFKA_PORT", str(free_port()))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    try:
        up = runner.invoke(app, ["services", "up"])
        assert up.exit_code == 0, up.output
        assert "(embedded): up" in up.output
        again = runner.invoke(app, ["services", "up"])  # idempotent
        assert again.exit_code == 0, again.output
        status = runner.invoke(app, ["services", "status"])
        assert status.exit_code == 0 and "redis" in status.output
        assert "stream worker pid" in status.output  # the managed stream worker
    finally:
        down = runner.invoke(app, ["services", "down"])
    assert "kafka (noida)" in down.output
    assert "stream worker" in down.output
    assert "redis" not in down.output  # the local Redis answered: not ours to start or stop
    assert redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=2).ping()
    after = runner.invoke(app, ["services", "status"])
    assert after.exit_code == 1
    assert "DOWN" in after.output


def test_cli_services_up_starts_a_private_redis_where_none_answers_and_down_stops_it(
    tmp_path, monkeypatch
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/2"
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FRAUD_PLATFORM_KAFKA_PORT", str(free_port()))
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("REDIS_URL", url)
    try:
        up = runner.invoke(app, ["services", "up"])
        assert up.exit_code == 0, up.output
        assert f"redis  {url}: up" in up.output
        assert redis.Redis.from_url(url, socket_timeout=2).ping()
        again = runner.invoke(app, ["services", "up"])  # idempotent: it answers now
        assert again.exit_code == 0, again.output
    finally:
        down = runner.invoke(app, ["services", "down"])
    assert "redis (private)" in down.output
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    assert "redis" not in runner.invoke(app, ["services", "down"]).output


@pytest.mark.parametrize(
    ("command", "external", "hint"),
    [
        (["simulate", "--days", "1"], False, "start it with `fraud-platform services up`"),
        (["materialize"], False, "start it with `fraud-platform services up`"),
        (["materialize", "--layer", "ingestion"], True, "check KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_cli_without_a_broker_says_what_to_do_in_one_line(
    command: list[str], external: bool, hint: str, tmp_path, monkeypatch
) -> None:
    port = free_port()
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    if external:
        monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    else:
        monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
        monkeypatch.setenv("FRAUD_PLATFORM_KAFKA_PORT", str(port))
    result = runner.invoke(app, command)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: Kafka not reachable at 127.0.0.1:{port}")
    assert lines[0].endswith(hint)


def test_cli_materialize_without_a_broker_fails_before_importing_dagster(tmp_path) -> None:
    code = (
        "import sys\n"
        "from fraud_platform.tools.cli import app\n"
        "try:\n"
        "    app(['materialize'])\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, 'dagster' in sys.modules)\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "FRAUD_PLATFORM_DATA_DIR": str(tmp_path),
        "FRAUD_PLATFORM_KAFKA_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "exit 1 False", done.stdout + done.stderr
    assert "fraud-platform services up" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "models/fraud_catboost=not json"], "the config is not JSON"),
        (["--config", "models/fraud_catboost=[1]"], "expected ASSET="),
        (["--layer", "nonsense"], "unknown layer"),
    ],
)
def test_cli_materialize_rejects_bad_options_before_running(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["materialize", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


@pytest.mark.parametrize("kafka_broker", ["noida"], indirect=True)
def test_cli_simulate_publishes_the_whole_simulation_streamed_by_weeks(
    kafka_broker, tmp_path, monkeypatch
) -> None:
    """`simulate` streams the simulation a week at a time: every event of the days reaches its
    topic (labels up to the simulation's end), as many as the whole simulation holds."""
    from datetime import timedelta

    from fraud_platform.lib.contracts.events import TOPICS
    from fraud_platform.lib.simulation import SimulationConfig, simulate
    from fraud_platform.tools.demo import recent_start

    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("FRAUD_PLATFORM_PROFILES_PG_URL", "postgresql://nobody@127.0.0.1:1/none")
    before = {topic: _end(kafka_broker.bootstrap, topic) for topic in TOPICS}
    result = runner.invoke(app, ["simulate", "--days", "9", "--users", "40", "--seed", "3"])
    assert result.exit_code == 0, result.output

    start = recent_start(9)
    whole = simulate(SimulationConfig(days=9, users=40, seed=3, start=start))
    end = start + timedelta(days=9)
    expected = {
        "transactions": len(whole.transactions),
        "account_events": len(whole.account_events),
        "labels": sum(label["label_time"] < end for label in whole.labels),
    }
    published = {t: _end(kafka_broker.bootstrap, t) - before[t] for t in TOPICS}
    assert published == expected
    assert f'published {{"transactions": {expected["transactions"]}' in result.output


def _end(bootstrap: str, topic: str) -> int:
    from fraud_platform.lib.kafka.admin import ensure_topics
    from fraud_platform.lib.kafka.reader import kafka_end_offsets

    ensure_topics(bootstrap, [topic])
    return sum(kafka_end_offsets(topic, bootstrap).values())
