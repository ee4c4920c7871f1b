"""PostgreSQL: the database holding the ``account_profiles`` source table."""

import dagster as dg

from fraud_platform.lib.ingestion.profiles_source import ProfilesSourceError, redact_url


class ProfilesSourceResource(dg.ConfigurableResource):
    """The PostgreSQL database holding the ``account_profiles`` table (libpq URL)."""

    url: str | None = None

    def require_url(self) -> str:
        if not self.url:
            raise ProfilesSourceError(
                "no PostgreSQL URL for the account profiles: set FRAUD_PLATFORM_PROFILES_PG_URL"
            )
        return self.url

    def display_url(self) -> str:
        return redact_url(self.url) if self.url else "(not configured)"
