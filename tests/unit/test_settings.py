"""Settings read from the environment: one Redis URL, validated once, with one-line errors."""

import os

import pytest

from fraud_platform.settings import (
    DEFAULT_REDIS_URL,
    DEFAULT_SCORING_BURST_MS,
    DEFAULT_SCORING_MAX_CONCURRENCY,
    DEFAULT_SCORING_MAX_QUEUE_WAIT_MS,
    Settings,
    SettingsError,
)


def test_settings_redis_url_defaults_to_the_local_server() -> None:
    assert Settings.from_env({}).redis_url == DEFAULT_REDIS_URL == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/3",
        "redis://cache.internal",
        "rediss://:secret@cache.internal:6380/0",
        "unix:///run/redis.sock?db=2",
        "redis://127.0.0.1:6379/",
    ],
)
def test_settings_redis_url_accepts_redis_rediss_and_unix(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1:6379/notadb", "the database 'notadb' is not a number"),
        ("unix:///run/redis.sock?db=one", "the database 'one' is not a number"),
        ("http://127.0.0.1:6379/0", "the scheme must be one of redis, rediss, unix"),
        ("127.0.0.1:6379", "the scheme must be one of redis, rediss, unix"),
        ("redis://127.0.0.1:63x9/0", "the port is not a number"),
        ("unix://", "a unix:// URL needs the socket path"),
    ],
)
def test_settings_redis_url_refuses_what_redis_py_would_misread(url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        Settings.from_env({"REDIS_URL": url})
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("REDIS_URL=")


def test_settings_error_never_shows_the_redis_password() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"REDIS_URL": "redis://:hunter2@cache:6379/x"})
    assert "hunter2" not in str(raised.value)
    assert "redis://:***@cache:6379/x" in str(raised.value)


def test_settings_refuses_a_port_that_is_not_a_number() -> None:
    with pytest.raises(SettingsError, match="FRAUD_PLATFORM_SERVICE_PORT='http' is not an integer"):
        Settings.from_env({"FRAUD_PLATFORM_SERVICE_PORT": "http"})


def test_settings_profiles_default_is_not_the_test_suites_database() -> None:
    assert Settings.from_env({}).profiles_pg_url == "postgresql://postgres@127.0.0.1:5432/postgres"


def test_settings_ensure_data_dir_creates_it(tmp_path) -> None:
    settings = Settings.from_env({"FRAUD_PLATFORM_DATA_DIR": str(tmp_path / "a" / "b")})
    assert settings.ensure_data_dir().is_dir()


def test_settings_ensure_data_dir_refuses_a_file(tmp_path) -> None:
    file = tmp_path / "data"
    file.write_text("")
    settings = Settings.from_env({"FRAUD_PLATFORM_DATA_DIR": str(file)})
    with pytest.raises(SettingsError, match=f"FRAUD_PLATFORM_DATA_DIR={file} is not a directory"):
        settings.ensure_data_dir()


def test_settings_ensure_data_dir_refuses_an_unwritable_place() -> None:
    # /proc refuses new entries even to root, for whom a chmod-ed directory stays writable
    settings = Settings.from_env({"FRAUD_PLATFORM_DATA_DIR": "/proc/fraud_platform_data"})
    with pytest.raises(SettingsError, match="is not a writable directory"):
        settings.ensure_data_dir()


def test_settings_scoring_service_defaults_one_worker_per_core_bounded_no_access_log() -> None:
    settings = Settings.from_env({})
    assert settings.scoring_workers == (os.cpu_count() or 1)
    assert settings.scoring_max_concurrency == DEFAULT_SCORING_MAX_CONCURRENCY > 0
    assert settings.scoring_max_queue_wait_ms == DEFAULT_SCORING_MAX_QUEUE_WAIT_MS > 0
    # a burst may wait longer than a line standing in overload
    assert settings.scoring_burst_ms == DEFAULT_SCORING_BURST_MS > DEFAULT_SCORING_MAX_QUEUE_WAIT_MS
    assert settings.scoring_access_log is False
    assert settings.scoring_fast_route is True


def test_settings_scoring_service_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "FRAUD_PLATFORM_SCORING_WORKERS": "3",
            "FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY": "0",
            "FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS": "0",
            "FRAUD_PLATFORM_SCORING_BURST_MS": "7",
            "FRAUD_PLATFORM_SCORING_ACCESS_LOG": "true",
            "FRAUD_PLATFORM_SCORING_FAST_ROUTE": "false",
        }
    )
    assert (settings.scoring_workers, settings.scoring_max_concurrency) == (3, 0)
    assert settings.scoring_max_queue_wait_ms == 0
    assert settings.scoring_burst_ms == 7
    assert settings.scoring_access_log is True
    assert settings.scoring_fast_route is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FRAUD_PLATFORM_SCORING_WORKERS", "0", "is < 1"),
        ("FRAUD_PLATFORM_SCORING_WORKERS", "two", "is not an integer"),
        ("FRAUD_PLATFORM_SCORING_MAX_CONCURRENCY", "-1", "is < 0"),
        ("FRAUD_PLATFORM_SCORING_MAX_QUEUE_WAIT_MS", "-1", "is < 0"),
        ("FRAUD_PLATFORM_SCORING_BURST_MS", "-1", "is < 0"),
        ("FRAUD_PLATFORM_SCORING_ACCESS_LOG", "maybe", "is not a boolean"),
    ],
)
def test_settings_scoring_service_refuses_unusable_values(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=f"{name}.*{message}"):
        Settings.from_env({name: value})
