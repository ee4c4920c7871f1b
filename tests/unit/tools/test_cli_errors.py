"""The command line's error paths that need no service: one line, a non-zero exit, no traceback,
and refused before the heavy imports."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fraud_platform.tools.cli import app
from fraud_platform.tools.layers import LAYERS

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_cli_refuses_a_malformed_redis_url(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/notadb")
    line = _one_line_error(runner.invoke(app, ["models", "list"]), 2)
    assert "REDIS_URL=redis://127.0.0.1:6379/notadb: the database 'notadb' is not a number" in line


def test_cli_refuses_a_data_dir_that_is_a_file(monkeypatch, tmp_path) -> None:
    file = tmp_path / "data"
    file.write_text("")
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(file))
    line = _one_line_error(runner.invoke(app, ["materialize"]), 2)
    assert line == f"error: FRAUD_PLATFORM_DATA_DIR={file} is not a directory"


def test_cli_refuses_an_unwritable_data_dir(monkeypatch) -> None:
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", "/proc/fraud_platform_data")
    line = _one_line_error(runner.invoke(app, ["services", "up"]), 2)
    assert "FRAUD_PLATFORM_DATA_DIR=/proc/fraud_platform_data is not a writable directory" in line


def test_cli_models_list_before_any_training_says_how_to_train(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    line = _one_line_error(runner.invoke(app, ["models", "list"]), 1)
    assert f"no fraud_catboost model in {tmp_path / 'bentoml'} yet" in line
    assert "`fraud-platform demo`" in line


def test_cli_materialize_help_lists_the_layers() -> None:
    result = runner.invoke(app, ["materialize", "--help"])
    assert result.exit_code == 0
    assert ", ".join(LAYERS) in " ".join(result.output.replace("│", " ").split())


@pytest.mark.parametrize("name", ["bronze", "nonsense"])
def test_cli_materialize_refuses_an_unknown_layer_before_importing_dagster(name: str) -> None:
    code = (
        "import sys\n"
        "from fraud_platform.tools.cli import app\n"
        "try:\n"
        f"    app(['materialize', '--layer', 'ingestion', '--layer', {name!r}])\n"
        "except SystemExit as exit:\n"
        "    print('exit', exit.code, 'dagster' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "exit 2 False", done.stdout + done.stderr
    assert done.stderr == f"error: unknown layer(s) [{name!r}]; known: {', '.join(LAYERS)}\n"
