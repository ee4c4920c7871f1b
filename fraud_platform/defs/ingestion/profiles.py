"""Bronze account profiles: a second source kind, PostgreSQL, read incrementally
(lib/ingestion/profiles_source.py, lib/ingestion/profiles.py).

When PostgreSQL is unreachable the asset fails with a clear error, except when its config says
``when_unreachable: skip``: then it materializes nothing (and its freshness check, which runs
after it, is skipped too); the bronze table exists all the same (empty on a first run), so dbt
builds and the profile features are null. The demo sets ``skip`` only when its own probe found no PostgreSQL,
so a demo without PostgreSQL still runs; scheduled runs keep the default and surface the outage.
"""

import dagster as dg

from fraud_platform.lib.ingestion.profiles import (
    BRONZE_TABLE,
    REJECTED_TABLE,
    ensure_bronze_tables,
    ingest_profiles,
    profiles_freshness,
)
from fraud_platform.lib.ingestion.profiles_source import (
    SOURCE_TABLE,
    PostgresUnreachable,
    ProfilesSourceError,
    create_table_if_missing,
)
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import ProfilesSourceResource

ACCOUNT_PROFILES = dg.AssetKey(["bronze", "account_profiles"])


class ProfilesIngestConfig(dg.Config):
    batch_size: int = 10_000
    """Rows per page read from PostgreSQL; each page is one Delta commit with its watermark."""
    when_unreachable: str = "fail"
    """``fail`` (default) or ``skip``: what to do when PostgreSQL cannot be reached."""
    create_table_if_missing: bool = True
    """Create the (empty) source table with its contract when missing: this platform owns it
    (the simulator seeds it). Set False when another system owns the table: then a missing
    table fails the run."""


class ProfilesFreshnessConfig(dg.Config):
    max_lag_minutes: float = 60.0
    """Fail when bronze's newest ``updated_at`` is older than PostgreSQL's by more than this."""
    max_pending_rows: int = 0
    """Fail when more rows than this wait in PostgreSQL beyond the bronze watermark."""


@dg.asset(
    key=ACCOUNT_PROFILES,
    group_name="ingestion",
    kinds={"postgres", "delta"},
    output_required=False,
    description=(
        "Account profiles (signup time, KYC level, home country, account type) read from the "
        f"PostgreSQL table `{SOURCE_TABLE}` incrementally by (updated_at, user_id), exactly once: "
        "the watermark is committed in the same Delta commit as the rows. Rows breaking the "
        f"contract go to `{REJECTED_TABLE}` with the reason."
    ),
)
def account_profiles(
    context: dg.AssetExecutionContext,
    config: ProfilesIngestConfig,
    profiles_pg: ProfilesSourceResource,
    delta: dg.ResourceParam[DeltaStore],
):
    if config.when_unreachable not in ("fail", "skip"):
        raise ValueError(
            f"when_unreachable must be 'fail' or 'skip', got {config.when_unreachable!r}"
        )
    ensure_bronze_tables(delta)
    try:
        if config.create_table_if_missing and create_table_if_missing(profiles_pg.require_url()):
            context.log.warning(f"created the empty source table {SOURCE_TABLE}")
        result = ingest_profiles(profiles_pg.require_url(), delta, batch_size=config.batch_size)
    except PostgresUnreachable as exc:
        if config.when_unreachable == "skip":
            context.log.warning(f"account profiles skipped: {exc}")
            return
        raise
    context.log.info(
        f"account profiles: +{result.accepted} rows, {result.rejected} rejected in "
        f"{result.pages} pages, {result.elapsed_s:.1f}s; watermark {result.watermark_text()}"
    )
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": delta.row_count(BRONZE_TABLE),
            "rows_appended": result.accepted,
            "rejected": result.rejected,
            "pages": result.pages,
            "watermark": result.watermark_text(),
            "delta_version": result.delta_version if result.delta_version is not None else -1,
            "source_table": result.source,
            "rejected_uri": delta.uri(REJECTED_TABLE),
        }
    )


@dg.asset_check(
    asset=account_profiles,
    description=(
        "Bronze keeps up with PostgreSQL: its newest updated_at is within max_lag_minutes of the "
        "source's newest, and no rows wait beyond the bronze watermark."
    ),
)
def account_profiles_fresh(
    config: ProfilesFreshnessConfig,
    profiles_pg: ProfilesSourceResource,
    delta: dg.ResourceParam[DeltaStore],
) -> dg.AssetCheckResult:
    try:
        state = profiles_freshness(profiles_pg.require_url(), delta)
    except ProfilesSourceError as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    lag_min = state.lag_s / 60
    problems = []
    if lag_min > config.max_lag_minutes:
        problems.append(
            f"bronze's newest updated_at ({state.bronze_newest}) is {lag_min:.1f} min behind "
            f"PostgreSQL's ({state.pg_newest}); limit {config.max_lag_minutes} min"
        )
    if state.pending > config.max_pending_rows:
        problems.append(f"{state.pending} rows in PostgreSQL are not in bronze yet")
    if state.unreadable:
        problems.append(f"{state.unreadable} rows have a null updated_at and can never be read")
    return dg.AssetCheckResult(
        passed=not problems,
        description="; ".join(problems) or "bronze is up to date with PostgreSQL",
        metadata={
            "pending_rows": state.pending,
            "unreadable_rows": state.unreadable,
            "lag_minutes": round(lag_min, 3) if state.lag_s != float("inf") else -1.0,
            "pg_newest_updated_at": str(state.pg_newest),
            "bronze_newest_updated_at": str(state.bronze_newest),
            "source": profiles_pg.display_url(),
        },
    )
