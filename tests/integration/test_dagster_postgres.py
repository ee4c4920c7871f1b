"""Dagster's storage on the local PostgreSQL (127.0.0.1:5432, trust auth), in a throwaway database.

``prepare_dagster_home`` writes a dagster.yaml whose storage is ``postgres`` with the URL read
from FRAUD_PLATFORM_DAGSTER_PG_URL; a run materialized on that instance must land in the
database's ``runs`` table.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from fraud_platform.settings import Settings
from fraud_platform.tools.instance import prepare_dagster_home

pytestmark = pytest.mark.integration

# SQLAlchemy 2.1 maps a bare ``postgresql://`` URL to the psycopg (3) driver, which is not
# installed (dagster-postgres depends on psycopg2): prepare_dagster_home names psycopg2, so
# both spellings a user may set must work.
URL_SCHEMES = [
    pytest.param("postgresql+psycopg2", id="psycopg2"),
    pytest.param("postgresql", id="bare"),
]


@dg.asset
def tiny_asset() -> int:
    return 42


@pytest.mark.parametrize("scheme", URL_SCHEMES)
def test_dagster_instance_stores_runs_in_postgres(
    scheme: str, pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dagster_url = pg_database.replace("postgresql://", f"{scheme}://", 1)
    # prepare_dagster_home sets os.environ["DAGSTER_HOME"]: monkeypatch restores it afterwards
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FRAUD_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FRAUD_PLATFORM_DAGSTER_PG_URL", dagster_url)
    settings = Settings.from_env()
    assert settings.dagster_postgres_url == dagster_url

    home = prepare_dagster_home(settings)
    assert home == tmp_path / "dagster_home"
    config_text = (home / "dagster.yaml").read_text()
    assert "127.0.0.1" not in config_text, "the URL must stay in the environment"
    assert yaml.safe_load(config_text)["storage"]["postgres"]["postgres_url"] == {
        "env": "FRAUD_PLATFORM_DAGSTER_PG_URL"
    }

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage), type(instance.run_storage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

        result = dg.materialize([tiny_asset], instance=instance)
        assert result.success
        run_id = result.run_id
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS

    with psycopg2.connect(pg_database, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (run_id, "ASSET_MATERIALIZATION"),
        )
        assert cur.fetchone()[0] == 1
        cur.execute(
            "SELECT count(*) FROM asset_keys WHERE asset_key = %s",
            (dg.AssetKey("tiny_asset").to_string(),),
        )
        assert cur.fetchone()[0] == 1
    conn.close()
