"""The PostgreSQL account-profiles source against a real PostgreSQL (127.0.0.1:5432, trust auth)
and real Delta tables. Every test gets a fresh database (the ``pg_database`` fixture), dropped after.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import psycopg2
import pytest

from fraud_platform.defs.ingestion.profiles import (
    ACCOUNT_PROFILES,
    ProfilesSourceResource,
    account_profiles,
    account_profiles_fresh,
)
from fraud_platform.lib.ingestion import profiles
from fraud_platform.lib.ingestion.profiles import BRONZE_TABLE, REJECTED_TABLE, ingest_profiles
from fraud_platform.lib.ingestion.profiles_source import (
    PostgresUnreachable,
    Profile,
    ProfilesSourceError,
    connect,
    ensure_schema,
    read_increment,
    reject_reason,
    seed_profiles,
)
from fraud_platform.lib.simulation.profiles import simulated_profiles
from fraud_platform.lib.simulation.world import build_world
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import DeltaResource
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def pg_url(pg_database: str) -> str:
    return pg_database


def _profile(i: int, kyc: int = 1, account_type: str = "personal") -> Profile:
    return Profile(f"u_{i:04d}", T0 - timedelta(days=100 + i), kyc, "DE", account_type)


def _seeded(pg_url: str, n: int, now: datetime = T0) -> None:
    conn = connect(pg_url)
    try:
        ensure_schema(conn)
        assert seed_profiles(conn, [_profile(i) for i in range(n)], now=now) == n
    finally:
        conn.close()


def _sql(pg_url: str, statement: str, params: tuple | list = ()) -> None:
    conn = connect(pg_url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


def _bronze(root: Path) -> pl.DataFrame:
    return pl.read_delta(str(root / BRONZE_TABLE))


def _rejected(root: Path) -> pl.DataFrame:
    return pl.read_delta(str(root / REJECTED_TABLE))


LEGACY_DDL = """
CREATE TABLE account_profiles (
    user_id text, signup_time timestamptz, kyc_level smallint, home_country text,
    account_type text, updated_at timestamptz
)"""  # a source without the contract's constraints


def _legacy_with_bad_rows(pg_url: str) -> dict[str, str]:
    """Good rows u_0000..u_0004 and five rows breaking the contract; returns reason fragments."""
    _sql(pg_url, LEGACY_DDL)
    rows = [(f"u_{i:04d}", T0 - timedelta(days=9), 2, "FR", "business", T0) for i in range(5)]
    bad = {
        "u_bad_kyc": ("u_bad_kyc", T0, 7, "DE", "personal", T0 + timedelta(seconds=1)),
        "u_bad_type": ("u_bad_type", T0, 1, "DE", "gold", T0 + timedelta(seconds=2)),
        "u_bad_country": ("u_bad_country", T0, 1, "xx", "personal", T0 + timedelta(seconds=3)),
        "u_no_signup": ("u_no_signup", None, 1, "DE", "personal", T0 + timedelta(seconds=4)),
        None: (None, T0, 1, "DE", "personal", T0 + timedelta(seconds=5)),
    }
    for row in rows + list(bad.values()):
        _sql(pg_url, "INSERT INTO account_profiles VALUES (%s, %s, %s, %s, %s, %s)", row)
    return {
        "u_bad_kyc": "kyc_level 7 is outside 0..3",
        "u_bad_type": "unknown account_type 'gold'",
        "u_bad_country": "home_country 'xx'",
        "u_no_signup": "signup_time is null",
        None: "user_id is null",
    }


# ---------------------------------------------------------------------------------------------


def test_incremental_ingest_appends_only_changed_rows(pg_url: str, tmp_path: Path) -> None:
    _seeded(pg_url, 40)
    first = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=15)
    assert (first.accepted, first.rejected, first.pages) == (40, 0, 3)
    assert first.watermark_after is not None and first.watermark_after[0] == T0
    assert _bronze(tmp_path)["user_id"].n_unique() == 40

    # an application updates three profiles (the trigger stamps updated_at), reseeding the rest
    # unchanged touches nothing
    changed = ["u_0003", "u_0017", "u_0031"]
    _sql(pg_url, "UPDATE account_profiles SET kyc_level = 3 WHERE user_id = ANY(%s)", (changed,))
    conn = connect(pg_url)
    assert seed_profiles(conn, [_profile(i) for i in range(40) if i not in (3, 17, 31)]) == 0
    conn.close()

    second = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=15)
    assert (second.accepted, second.rejected) == (3, 0)
    assert second.watermark_before == first.watermark_after
    assert second.watermark_after is not None and second.watermark_after[0] > T0
    bronze = _bronze(tmp_path)
    assert bronze.height == 43
    appended = bronze.filter(pl.col("updated_at") > T0)
    assert sorted(appended["user_id"]) == changed
    assert set(appended["kyc_level"]) == {3}

    third = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=15)
    assert (third.accepted, third.pages) == (0, 0)
    assert _bronze(tmp_path).height == 43


def test_ties_on_updated_at_across_page_boundaries_are_not_lost(
    pg_url: str, tmp_path: Path
) -> None:
    _seeded(pg_url, 25, now=T0)  # 25 rows sharing one updated_at
    conn = connect(pg_url)
    seed_profiles(conn, [_profile(i) for i in range(25, 31)], now=T0 + timedelta(seconds=1))
    # keyset pages of 4 walk through the tie without losing or repeating a row
    seen, mark = [], None
    while rows := read_increment(conn, mark, 4):
        seen += [r["user_id"] for r in rows]
        mark = (rows[-1]["updated_at"], rows[-1]["user_id"])
    conn.close()
    assert len(seen) == len(set(seen)) == 31

    result = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=4)
    assert (result.accepted, result.pages) == (31, 8)
    bronze = _bronze(tmp_path)
    assert bronze.height == bronze["user_id"].n_unique() == 31
    assert sorted(bronze["_batch"].unique()) == list(range(1, 9))


def test_crash_after_the_delta_commit_is_rerun_without_duplicates(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seeded(pg_url, 30)
    original = profiles._commit_bronze
    calls = {"n": 0}

    def commit_then_crash(*args, **kwargs):
        version = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash after the second Delta commit")
        return version

    monkeypatch.setattr(profiles, "_commit_bronze", commit_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=10)
    assert _bronze(tmp_path).height == 20  # two pages committed with their watermark
    monkeypatch.setattr(profiles, "_commit_bronze", original)

    rerun = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=10)
    assert (rerun.accepted, rerun.pages) == (10, 1)
    bronze = _bronze(tmp_path)
    assert bronze.height == bronze["user_id"].n_unique() == 30


def test_malformed_rows_go_to_the_rejected_table_with_the_reason(
    pg_url: str, tmp_path: Path
) -> None:
    expected = _legacy_with_bad_rows(pg_url)
    result = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=100)
    assert (result.accepted, result.rejected) == (5, 5)
    assert sorted(_bronze(tmp_path)["user_id"]) == [f"u_{i:04d}" for i in range(5)]
    rejected = _rejected(tmp_path)
    reasons = dict(zip(rejected["user_id"], rejected["reason"], strict=True))
    assert set(reasons) == set(expected)
    for user_id, fragment in expected.items():
        assert fragment in reasons[user_id], (user_id, reasons[user_id])
    assert all('"kyc_level"' in raw for raw in rejected["raw_row"])

    again = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=100)
    assert (again.accepted, again.rejected) == (0, 0)
    assert _rejected(tmp_path).height == 5


def test_crash_between_reject_and_bronze_commits_repeats_no_reject(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _legacy_with_bad_rows(pg_url)

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash before the bronze commit")

    monkeypatch.setattr(profiles, "_commit_bronze", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=100)
    assert _rejected(tmp_path).height == 5 and _bronze(tmp_path).height == 0
    monkeypatch.undo()

    result = ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=100)
    assert (result.accepted, result.rejected) == (5, 0)  # the rejects were already there
    assert _rejected(tmp_path).height == 5
    assert _bronze(tmp_path).height == 5


def _resources(pg_url: str, root: Path) -> dict:
    return {
        "profiles_pg": ProfilesSourceResource(url=pg_url),
        "delta": DeltaResource(root=str(root)),
    }


def _check_result(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_freshness_check_fails_until_bronze_caught_up(pg_url: str, tmp_path: Path) -> None:
    _seeded(pg_url, 12)
    resources = _resources(pg_url, tmp_path)
    defs = [account_profiles, account_profiles_fresh]
    only_check = dg.AssetSelection.checks(account_profiles_fresh)

    stale = dg.materialize(defs, resources=resources, selection=only_check)
    evaluation = _check_result(stale)
    assert not evaluation.passed
    assert "12 rows in PostgreSQL are not in bronze yet" in evaluation.description

    run = dg.materialize(defs, resources=resources)
    assert run.success and _check_result(run).passed
    [materialization] = run.asset_materializations_for_node("bronze__account_profiles")
    metadata = {k: v.value for k, v in materialization.metadata.items()}
    assert metadata["rows_appended"] == 12 and metadata["dagster/row_count"] == 12
    assert metadata["watermark"].startswith(T0.isoformat())
    assert "account_profiles" in metadata["source_table"]

    _sql(pg_url, "UPDATE account_profiles SET account_type = 'premium' WHERE user_id = 'u_0005'")
    behind = _check_result(dg.materialize(defs, resources=resources, selection=only_check))
    assert not behind.passed
    assert "1 rows in PostgreSQL are not in bronze yet" in behind.description
    assert "min behind" in behind.description  # the update is far newer than T0

    caught_up = dg.materialize(defs, resources=resources)
    assert _check_result(caught_up).passed
    assert _bronze(tmp_path).height == 13


def test_unreachable_postgres_gives_a_clear_error_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/test"
    with pytest.raises(PostgresUnreachable) as info:
        ingest_profiles(url, DeltaStore(str(tmp_path)))
    message = str(info.value)
    assert message.startswith("PostgreSQL not reachable at postgresql://postgres:***@127.0.0.1:")
    assert "s3cret" not in message

    resources = _resources(url, tmp_path)
    failed = dg.materialize([account_profiles], resources=resources, raise_on_error=False)
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.is_step_failure]
    text = failure.step_failure_data.error.to_string()
    assert "PostgreSQL not reachable at" in text and "s3cret" not in text

    skipped = dg.materialize(
        [account_profiles, account_profiles_fresh],
        resources=resources,
        run_config={"ops": {"bronze__account_profiles": {"config": {"when_unreachable": "skip"}}}},
    )
    assert skipped.success
    assert not skipped.asset_materializations_for_node("bronze__account_profiles")
    assert not skipped.get_asset_check_evaluations()


def test_skipped_source_leaves_empty_bronze_tables_for_dbt(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    skipped = dg.materialize(
        [account_profiles],
        resources=_resources(url, tmp_path),
        run_config={"ops": {"bronze__account_profiles": {"config": {"when_unreachable": "skip"}}}},
    )
    assert skipped.success
    assert _bronze(tmp_path).height == 0 and _rejected(tmp_path).height == 0
    assert _bronze(tmp_path).columns[:3] == ["user_id", "signup_time", "kyc_level"]


def test_missing_source_table_is_a_clear_error_or_created_empty(
    pg_url: str, tmp_path: Path
) -> None:
    with pytest.raises(ProfilesSourceError, match="table 'account_profiles' not found"):
        ingest_profiles(pg_url, DeltaStore(str(tmp_path)))
    # the asset (default config) creates the empty table with its contract: nothing to ingest
    run = dg.materialize(
        [account_profiles, account_profiles_fresh], resources=_resources(pg_url, tmp_path)
    )
    assert run.success and _check_result(run).passed
    assert dg.AssetKey(["bronze", "account_profiles"]) == ACCOUNT_PROFILES
    with pytest.raises(psycopg2.errors.CheckViolation):
        _sql(
            pg_url,
            "INSERT INTO account_profiles VALUES ('u', now(), 9, 'DE', 'personal', now())",
        )


def test_simulated_profiles_are_deterministic_per_seed_and_follow_the_contract() -> None:
    start = datetime(2026, 10, 1, tzinfo=UTC)
    first = simulated_profiles(7, 300, start)
    assert first == simulated_profiles(7, 300, start)
    other = simulated_profiles(8, 300, start)
    assert [p.user_id for p in other] != [p.user_id for p in first]
    assert [p.user_id for p in first] == [u.user_id for u in build_world(7, 300, 400).users]
    homes = {u.user_id: u.home.code for u in build_world(7, 300, 400).users}
    for p in first:
        row = {**p.__dict__, "updated_at": start}
        assert reject_reason(row) is None, (p, reject_reason(row))
        assert p.signup_time < start and p.home_country == homes[p.user_id]
    assert {p.account_type for p in first} == {"personal", "business", "premium"}
    assert {p.kyc_level for p in first} <= {0, 1, 2, 3} and len({p.kyc_level for p in first}) > 2


def test_concurrent_ingestion_fails_with_a_conflict_instead_of_duplicating(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seeded(pg_url, 8)
    original = profiles._commit_bronze
    state = {"raced": False}

    def another_ingestion_commits_first(*args, **kwargs):
        if not state["raced"]:  # a second ingestion runs to completion in between
            state["raced"] = True
            monkeypatch.setattr(profiles, "_commit_bronze", original)
            assert ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=100).accepted == 8
        return original(*args, **kwargs)

    monkeypatch.setattr(profiles, "_commit_bronze", another_ingestion_commits_first)
    with pytest.raises(Exception, match="Concurrent transaction"):
        ingest_profiles(pg_url, DeltaStore(str(tmp_path)), batch_size=100)
    bronze = _bronze(tmp_path)
    assert bronze.height == bronze["user_id"].n_unique() == 8
