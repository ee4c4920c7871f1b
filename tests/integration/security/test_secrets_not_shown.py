"""Secrets come from the environment and the UI never shows them: the resources' configured
values, as Dagster snapshots them for its UI, carry the variables' names only."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap

from fraud_platform.defs.resources import build_resources
from fraud_platform.settings import Settings

PASSWORD = "s3cr3t-Pa55word-42"
ENV = {
    "REDIS_URL": f"rediss://:{PASSWORD}@redis.internal:6380/0",
    "FRAUD_PLATFORM_PROFILES_PG_URL": f"postgresql://reader:{PASSWORD}@pg.internal:5432/crm",
    "FRAUD_PLATFORM_ALERT_WEBHOOK": f"https://hooks.example.com/services/{PASSWORD}",
    "FRAUD_PLATFORM_DELTA_ROOT": "s3://lake/delta",
    "FRAUD_PLATFORM_DELTA_OPT_AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
    "FRAUD_PLATFORM_DELTA_OPT_AWS_SECRET_ACCESS_KEY": PASSWORD,
}


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch, tmp_path) -> dict[str, object]:
    """What the UI's resource page is built from: each resource's configured values."""
    for key, value in {**ENV, "FRAUD_PLATFORM_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    defs = dg.Definitions(resources=build_resources(Settings.from_env()))
    snap = RepositorySnap.from_def(defs.get_repository_def())
    return {
        resource.name: {
            field: value if isinstance(value, str) else f"env:{value.name}"
            for field, value in resource.configured_values.items()
        }
        for resource in snap.resources
    }


def test_no_password_in_any_resource_config_shown(shown: dict[str, object]) -> None:
    text = json.dumps(shown)
    assert "redis" in shown and "profiles_pg" in shown  # the snapshot is the real one
    assert PASSWORD not in text
    assert "AKIAEXAMPLE" not in text


def test_the_ui_shows_the_variable_names(shown: dict[str, object]) -> None:
    text = json.dumps(shown)
    for variable in [
        "REDIS_URL",
        "FRAUD_PLATFORM_PROFILES_PG_URL",
        "FRAUD_PLATFORM_ALERT_WEBHOOK",
        "FRAUD_PLATFORM_DELTA_OPT_AWS_SECRET_ACCESS_KEY",
    ]:
        assert variable in text, variable


def test_resources_still_get_the_secret_values(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for key, value in {**ENV, "FRAUD_PLATFORM_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(key, value)
    resources = build_resources(Settings.from_env())
    seen: dict[str, object] = {}

    @dg.asset(required_resource_keys={"redis", "profiles_pg", "delta"})
    def probe(context) -> None:  # noqa: ANN001 - dagster refuses the dg.-qualified annotation
        seen["redis"] = context.resources.redis.url
        seen["pg"] = context.resources.profiles_pg.url
        seen["delta"] = dict(context.resources.delta.storage_options)

    subset = {key: resources[key] for key in ("redis", "profiles_pg", "delta")}
    assert dg.materialize([probe], resources=subset).success
    assert seen["redis"] == ENV["REDIS_URL"]
    assert seen["pg"] == ENV["FRAUD_PLATFORM_PROFILES_PG_URL"]
    assert seen["delta"] == {
        "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": PASSWORD,
    }


def test_without_the_variables_the_defaults_are_plain_values(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    for key in ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path))
    resources = build_resources(Settings.from_env())
    assert resources["redis"].url == "redis://127.0.0.1:6379/0"
    assert resources["alerts"].webhook_url is None
