"""The command line, against real services: embedded broker lifecycle and clear errors."""

import pytest
from typer.testing import CliRunner

from fraud_platform.tools.cli import app
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
runner = CliRunner()


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
    assert "service fraud_scoring_v1: 54 model features from user_txn_velocity_v1," in result.output
    assert "service fraud_scoring_v2: 55 model features from user_txn_velocity_v2," in result.output


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
    finally:
        down = runner.invoke(app, ["services", "down"])
    assert "kafka (noida)" in down.output
    after = runner.invoke(app, ["services", "status"])
    assert after.exit_code == 1
    assert "DOWN" in after.output


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
