"""Account profiles as features: a transaction at t sees the latest profile version with
updated_at (valid_from) strictly before t, offline and online."""

import uuid
from datetime import UTC, datetime, timedelta

import polars as pl
import redis

from fraud_platform.lib.features.catalog import ACCOUNT_PROFILE
from fraud_platform.lib.features.compute import compute_feature_group, latest_per_entity
from fraud_platform.lib.features.online.layout import online_key
from fraud_platform.lib.features.online.reader import OnlineFeatureReader
from fraud_platform.lib.features.online.writer import write_snapshot
from fraud_platform.lib.features.pit import point_in_time_join
from fraud_platform.lib.features.registry import FeatureService
from fraud_platform.lib.features.request import REQUEST_FEATURES, model_row
from fraud_platform.lib.features.services import FRAUD_SCORING_V1
from fraud_platform.lib.features.training_frame import model_frame
from fraud_platform.lib.serving.lookup import ABSENCE_IS_SIGNAL
from tests.redis_server import redis_db_url

SIGNUP = datetime(2025, 3, 1, 12, tzinfo=UTC)
T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)  # first version: KYC 1, personal
UPDATE = T0 + timedelta(days=2)  # second version: KYC 3, business
MICRO = timedelta(microseconds=1)
PROFILE_FEATURES = ("kyc_level", "account_type", "account_age_days", "is_away_from_home_country")
SERVICE = FeatureService(
    "profile_only",
    (ACCOUNT_PROFILE,),
    PROFILE_FEATURES,
    ("account_type",),
    tuple(f for f in REQUEST_FEATURES if f.name in PROFILE_FEATURES),
)
TS = pl.Datetime("us", "UTC")


def _versions(user: str) -> pl.DataFrame:
    """Rows of silver.dim_account_profile_versions for one user with two versions."""
    return pl.DataFrame(
        [
            {"user_id": user, "account_type": kind, "home_country": "FR", "kyc_level": kyc}
            | {"signup_time": SIGNUP, "valid_from": start, "valid_to": end}
            for kind, kyc, start, end in (
                ("personal", 1, T0, UPDATE),
                ("business", 3, UPDATE, None),
            )
        ],
        schema_overrides={"signup_time": TS, "valid_from": TS, "valid_to": TS},
    )


def _txns(rows: list[tuple[str, datetime, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"user_id": user, "event_time": at, "country": country, "amount": 10.0}
            | {"channel": "ecommerce", "merchant_category": "grocery"}
            for user, at, country in rows
        ],
        schema_overrides={"event_time": TS},
    )


def _age_days(at: datetime) -> float:
    return (at - SIGNUP).total_seconds() / 86_400.0


def test_profile_change_is_visible_only_strictly_after_its_updated_at() -> None:
    rows = {ACCOUNT_PROFILE.versioned_name: compute_feature_group(ACCOUNT_PROFILE, _versions("u1"))}
    txns = _txns(
        [
            ("u1", UPDATE - MICRO, "FR"),  # right before the update: the first version
            ("u1", UPDATE, "DE"),  # at the update's own instant: still the first version
            ("u1", UPDATE + MICRO, "FR"),  # right after: the second version
            ("u1", T0 - MICRO, "FR"),  # before any version: no profile
            ("u2", UPDATE + MICRO, "FR"),  # a user without a profile
        ]
    )
    joined = point_in_time_join(txns, [ACCOUNT_PROFILE], rows)
    frame = model_frame(joined, SERVICE)
    assert frame.to_dicts() == [
        {
            "kyc_level": 1,
            "account_type": "personal",
            "account_age_days": _age_days(UPDATE - MICRO),
            "is_away_from_home_country": 0,
        },
        {
            "kyc_level": 1,
            "account_type": "personal",
            "account_age_days": _age_days(UPDATE),
            "is_away_from_home_country": 1,
        },
        {
            "kyc_level": 3,
            "account_type": "business",
            "account_age_days": _age_days(UPDATE + MICRO),
            "is_away_from_home_country": 0,
        },
        dict.fromkeys(PROFILE_FEATURES),
        dict.fromkeys(PROFILE_FEATURES),
    ]


def test_profile_features_are_model_inputs_and_their_absence_is_not_degraded() -> None:
    assert ACCOUNT_PROFILE in FRAUD_SCORING_V1.groups
    assert set(PROFILE_FEATURES) <= set(FRAUD_SCORING_V1.model_features)
    assert "account_type" in FRAUD_SCORING_V1.categorical_features
    assert ACCOUNT_PROFILE.versioned_name in ABSENCE_IS_SIGNAL


def test_online_profile_equals_offline_after_the_update() -> None:
    user = f"u-{uuid.uuid4().hex}"
    versions = _versions(user)
    rows = compute_feature_group(ACCOUNT_PROFILE, versions)
    client = redis.Redis.from_url(redis_db_url(0), socket_timeout=5)
    latest = latest_per_entity(rows)
    try:
        write_snapshot(client, ACCOUNT_PROFILE, latest)
        reader = OnlineFeatureReader(client, SERVICE)
        at_update = reader.get_online_features({"user_id": user}, now=UPDATE)
        assert at_update.missing_groups == [ACCOUNT_PROFILE.versioned_name]
        txn = _txns([(user, UPDATE + MICRO, "DE")])
        online = reader.get_online_features({"user_id": user}, now=UPDATE + MICRO)
        offline = point_in_time_join(txn, [ACCOUNT_PROFILE], {ACCOUNT_PROFILE.versioned_name: rows})
        served = model_row(txn.row(0, named=True), online.values, SERVICE)
        assert served == model_frame(offline, SERVICE).row(0, named=True)
        assert served["kyc_level"] == 3 and served["is_away_from_home_country"] == 1
    finally:
        client.delete(online_key(ACCOUNT_PROFILE, user))
