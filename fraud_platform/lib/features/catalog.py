"""The fraud feature library: every feature group version, declared once.

Versions of a group coexist (``user_txn_velocity_v1`` and ``_v2``): each has its own table,
asset and online keys. Which versions a model consumes is its feature service (services.py).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from fraud_platform.lib.features.registry import (
    Entity,
    Feature,
    FeatureGroup,
    validate_registry,
)

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

USER = Entity("user", ("user_id",), "An account holder.")
CARD = Entity("card", ("card_id",), "A payment-card token.")
USER_DEVICE = Entity("user_device", ("user_id", "device_id"), "A device as used by one user.")
USER_COUNTRY = Entity("user_country", ("user_id", "country"), "A country as seen for one user.")
MERCHANT = Entity("merchant", ("merchant_id",), "A merchant (payee of card payments).")
COUNTERPARTY = Entity("counterparty", ("counterparty_id",), "The receiver of a p2p transfer.")
USER_COUNTERPARTY = Entity(
    "user_counterparty", ("user_id", "counterparty_id"), "A p2p receiver as paid by one user."
)

TXN = "fct_transactions"
ACCOUNT = "fct_account_events"
MERCHANT_FRAUD_LABELS = "fct_merchant_fraud_labels"
PROFILE_VERSIONS = "dim_account_profile_versions"
P2P = ("channel", "==", "p2p")
OWNER = "risk-data-science"


def _txn(name: str, function: str, column: str | None, window: timedelta | None, **kw) -> Feature:
    return Feature(name=name, function=function, column=column, window=window, **kw)  # type: ignore[arg-type]


USER_TXN_VELOCITY = FeatureGroup(
    name="user_txn_velocity",
    version=1,
    entity=USER,
    source=TXN,
    event_time_column="event_time",
    ttl=30 * DAY,
    owner=OWNER,
    description="How much and how fast a user spends, over sliding windows up to 30 days.",
    features=(
        _txn("user_txn_count_1h", "count", None, HOUR, dtype="int"),
        _txn("user_txn_count_24h", "count", None, DAY, dtype="int"),
        _txn("user_txn_count_7d", "count", None, 7 * DAY, dtype="int"),
        _txn("user_amount_sum_1h", "sum", "amount", HOUR),
        _txn("user_amount_sum_24h", "sum", "amount", DAY),
        _txn("user_amount_max_7d", "max", "amount", 7 * DAY),
        _txn("user_amount_mean_30d", "mean", "amount", 30 * DAY),
        _txn("user_amount_std_30d", "std", "amount", 30 * DAY),
        _txn("user_distinct_merchants_24h", "n_unique", "merchant_id", DAY, dtype="int"),
        _txn("user_distinct_countries_24h", "n_unique", "country", DAY, dtype="int"),
        _txn("user_distinct_devices_7d", "n_unique", "device_id", 7 * DAY, dtype="int"),
        _txn(
            "user_p2p_count_24h",
            "count",
            "amount",
            DAY,
            where=("channel", "==", "p2p"),
            dtype="int",
        ),
        _txn(
            "user_withdrawal_sum_24h", "sum", "amount", DAY, where=("channel", "==", "withdrawal")
        ),
        _txn("user_last_txn_time", "max", "event_time", None, dtype="ts"),
    ),
)

USER_TXN_VELOCITY_V2 = dataclasses.replace(
    USER_TXN_VELOCITY,
    version=2,
    description=(
        "Version 1 plus the user's smallest amount in 7 days (small test payments before a "
        "large one)."
    ),
    features=(
        *USER_TXN_VELOCITY.features,
        _txn("user_amount_min_7d", "min", "amount", 7 * DAY),
    ),
)

CARD_VELOCITY = FeatureGroup(
    name="card_velocity",
    version=1,
    entity=CARD,
    source=TXN,
    event_time_column="event_time",
    ttl=7 * DAY,
    owner=OWNER,
    description="Card-testing and stolen-card signals: bursts of use on one card.",
    features=(
        _txn("card_txn_count_10m", "count", None, 10 * MINUTE, dtype="int"),
        _txn("card_txn_count_1h", "count", None, HOUR, dtype="int"),
        _txn(
            "card_small_txn_count_1h",
            "count",
            "amount",
            HOUR,
            where=("amount", "<", 5.0),
            dtype="int",
        ),
        _txn("card_amount_sum_1h", "sum", "amount", HOUR),
        _txn("card_distinct_merchants_1h", "n_unique", "merchant_id", HOUR, dtype="int"),
        _txn("card_txn_count_24h", "count", None, DAY, dtype="int"),
        _txn("card_distinct_countries_24h", "n_unique", "country", DAY, dtype="int"),
        _txn("card_last_txn_time", "max", "event_time", None, dtype="ts"),
    ),
)

ACCOUNT_SECURITY = FeatureGroup(
    name="account_security",
    version=1,
    entity=USER,
    source=ACCOUNT,
    event_time_column="event_time",
    ttl=30 * DAY,
    owner=OWNER,
    description="Account-takeover signals from logins and security changes.",
    features=(
        _txn(
            "failed_logins_1h",
            "count",
            None,
            HOUR,
            where=("event_type", "==", "login_failed"),
            dtype="int",
        ),
        _txn(
            "failed_logins_24h",
            "count",
            None,
            DAY,
            where=("event_type", "==", "login_failed"),
            dtype="int",
        ),
        _txn("logins_24h", "count", None, DAY, where=("event_type", "==", "login"), dtype="int"),
        _txn("login_countries_24h", "n_unique", "country", DAY, dtype="int"),
        _txn("login_devices_24h", "n_unique", "device_id", DAY, dtype="int"),
        _txn(
            "last_password_change_time",
            "max",
            "event_time",
            None,
            where=("event_type", "==", "password_change"),
            dtype="ts",
        ),
        _txn(
            "last_twofa_disabled_time",
            "max",
            "event_time",
            None,
            where=("event_type", "==", "twofa_disabled"),
            dtype="ts",
        ),
        _txn(
            "last_device_added_time",
            "max",
            "event_time",
            None,
            where=("event_type", "==", "device_added"),
            dtype="ts",
        ),
        _txn(
            "last_withdrawal_address_added_time",
            "max",
            "event_time",
            None,
            where=("event_type", "==", "withdrawal_address_added"),
            dtype="ts",
        ),
    ),
)

USER_DEVICE_HISTORY = FeatureGroup(
    name="user_device_history",
    version=1,
    entity=USER_DEVICE,
    source=TXN,
    event_time_column="event_time",
    ttl=90 * DAY,
    owner=OWNER,
    description="Has this user paid from this device before? Null means a new device.",
    features=(
        _txn("user_device_txn_count", "count", None, None, dtype="int"),
        _txn("user_device_first_seen_time", "min", "event_time", None, dtype="ts"),
    ),
    absence_is_signal=True,
)

USER_COUNTRY_HISTORY = FeatureGroup(
    name="user_country_history",
    version=1,
    entity=USER_COUNTRY,
    source=TXN,
    event_time_column="event_time",
    ttl=90 * DAY,
    owner=OWNER,
    description="Has this user transacted in this country before? Null means a new country.",
    features=(
        _txn("user_country_txn_count", "count", None, None, dtype="int"),
        _txn("user_country_first_seen_time", "min", "event_time", None, dtype="ts"),
    ),
    absence_is_signal=True,
)

MERCHANT_ACTIVITY = FeatureGroup(
    name="merchant_activity",
    version=1,
    entity=MERCHANT,
    source=TXN,
    event_time_column="event_time",
    ttl=30 * DAY,
    owner=OWNER,
    description="How busy a merchant is: the denominator of its fraud rate, and bursts.",
    features=(
        _txn("merchant_txn_count_1h", "count", None, HOUR, dtype="int"),
        _txn("merchant_txn_count_24h", "count", None, DAY, dtype="int"),
        _txn("merchant_txn_count_30d", "count", None, 30 * DAY, dtype="int"),
        _txn("merchant_amount_mean_30d", "mean", "amount", 30 * DAY),
        _txn("merchant_distinct_users_24h", "n_unique", "user_id", DAY, dtype="int"),
    ),
)

MERCHANT_FRAUD = FeatureGroup(
    name="merchant_fraud",
    version=1,
    entity=MERCHANT,
    source=MERCHANT_FRAUD_LABELS,
    event_time_column="label_time",
    ttl=30 * DAY,
    owner=OWNER,
    description=(
        "Frauds at a merchant counted when their label became known (label_time), never when "
        "they happened: label-delay aware. No row means no fraud known in 30 days."
    ),
    features=(
        _txn("merchant_fraud_labels_30d", "count", None, 30 * DAY, dtype="int"),
        _txn("merchant_fraud_labels_7d", "count", None, 7 * DAY, dtype="int"),
        _txn("merchant_last_fraud_label_time", "max", "label_time", None, dtype="ts"),
    ),
    absence_is_signal=True,
    stream=False,  # labels joined to their transaction's merchant by dbt
)

COUNTERPARTY_INBOUND = FeatureGroup(
    name="counterparty_inbound",
    version=1,
    entity=COUNTERPARTY,
    source=TXN,
    event_time_column="event_time",
    ttl=7 * DAY,
    owner=OWNER,
    description=(
        "Money-mule signals: how many different senders paid this p2p receiver. No row means "
        "nobody paid it in 7 days."
    ),
    features=(
        _txn("counterparty_senders_24h", "n_unique", "user_id", DAY, where=P2P, dtype="int"),
        _txn("counterparty_p2p_count_24h", "count", "amount", DAY, where=P2P, dtype="int"),
        _txn("counterparty_p2p_amount_sum_24h", "sum", "amount", DAY, where=P2P),
    ),
    absence_is_signal=True,
)

USER_COUNTERPARTY_HISTORY = FeatureGroup(
    name="user_counterparty_history",
    version=1,
    entity=USER_COUNTERPARTY,
    source=TXN,
    event_time_column="event_time",
    ttl=180 * DAY,
    owner=OWNER,
    description="Has this user paid this p2p receiver before? No row means a first transfer.",
    features=(
        _txn("user_counterparty_transfer_count", "count", "amount", None, where=P2P, dtype="int"),
        _txn("user_counterparty_first_time", "min", "event_time", None, dtype="ts"),
    ),
    absence_is_signal=True,
)

ACCOUNT_PROFILE = FeatureGroup(
    name="account_profile",
    version=1,
    entity=USER,
    source=PROFILE_VERSIONS,
    event_time_column="valid_from",
    ttl=10 * 365 * DAY,  # a profile holds until it changes; the ttl only has to be positive
    owner=OWNER,
    description=(
        "The account's profile from PostgreSQL: signup time, KYC level, account type, home "
        "country. A version holds from its updated_at: a transaction at t sees the latest "
        "version with updated_at strictly before t (as every group), so a change is visible "
        "only to later transactions. No row means no profile known (none written before t, or "
        "PostgreSQL not ingested): the features are null and the answer is not degraded."
    ),
    features=(
        _txn("signup_time", "last", "signup_time", None, dtype="ts"),
        _txn("kyc_level", "last", "kyc_level", None, dtype="int"),
        _txn("profile_account_type", "last", "account_type", None, dtype="str"),
        _txn("home_country", "last", "home_country", None, dtype="str"),
    ),
    absence_is_signal=True,
    stream=False,  # PostgreSQL profiles, not a topic
)

# ---------------------------------------------------------------------------------------------
# Thin data: card, merchant/terminal, amount and time only (``services.FRAUD_SCORING_THIN_V1``).

CARD_SPENDING = FeatureGroup(
    name="card_spending",
    version=1,
    entity=CARD,
    source=TXN,
    event_time_column="event_time",
    ttl=30 * DAY,
    owner=OWNER,
    description=(
        "A card's spending velocity and usual amount over 1, 7 and 30 days, from card, "
        "merchant, amount and time only (the amount-to-mean ratios are request features)."
    ),
    features=(
        _txn("card_spend_count_1h", "count", None, HOUR, dtype="int"),
        *(
            _txn(f"card_spend_count_{w}", "count", None, days * DAY, dtype="int")
            for w, days in (("1d", 1), ("7d", 7), ("30d", 30))
        ),
        *(
            _txn(f"card_spend_mean_{w}", "mean", "amount", days * DAY)
            for w, days in (("1d", 1), ("7d", 7), ("30d", 30))
        ),
        _txn("card_spend_std_30d", "std", "amount", 30 * DAY),
        _txn("card_spend_max_7d", "max", "amount", 7 * DAY),
        _txn("card_spend_merchants_1d", "n_unique", "merchant_id", DAY, dtype="int"),
        _txn("card_spend_last_time", "max", "event_time", None, dtype="ts"),
    ),
)

MERCHANT_ACTIVITY_V2 = dataclasses.replace(
    MERCHANT_ACTIVITY,
    version=2,
    description=(
        "Version 1 plus the merchant's transactions in 7 days: the denominators of its fraud "
        "rates over 1, 7 and 30 days."
    ),
    features=(
        *MERCHANT_ACTIVITY.features,
        _txn("merchant_txn_count_7d", "count", None, 7 * DAY, dtype="int"),
    ),
)

MERCHANT_FRAUD_V2 = dataclasses.replace(
    MERCHANT_FRAUD,
    version=2,
    description=(
        "Version 1 plus the fraud labels that became known in the last 24 hours: the "
        "numerators of the merchant's fraud rates over 1, 7 and 30 days (label-delay aware: "
        "counted at label_time, so a lookup sees only labels known before it)."
    ),
    features=(
        *MERCHANT_FRAUD.features,
        _txn("merchant_fraud_labels_1d", "count", None, DAY, dtype="int"),
    ),
)

FEATURE_GROUPS: tuple[FeatureGroup, ...] = (
    USER_TXN_VELOCITY,
    USER_TXN_VELOCITY_V2,
    CARD_VELOCITY,
    ACCOUNT_SECURITY,
    USER_DEVICE_HISTORY,
    USER_COUNTRY_HISTORY,
    MERCHANT_ACTIVITY,
    MERCHANT_FRAUD,
    COUNTERPARTY_INBOUND,
    USER_COUNTERPARTY_HISTORY,
    ACCOUNT_PROFILE,
    CARD_SPENDING,
    MERCHANT_ACTIVITY_V2,
    MERCHANT_FRAUD_V2,
)
validate_registry(FEATURE_GROUPS)


def feature_group(name: str) -> FeatureGroup:
    """The group of versioned name ``name`` (or of plain name ``name`` if it has one version)."""
    for group in FEATURE_GROUPS:
        if group.versioned_name == name:
            return group
    versions = [group for group in FEATURE_GROUPS if group.name == name]
    if len(versions) == 1:
        return versions[0]
    if versions:
        names = [g.versioned_name for g in versions]
        raise KeyError(f"feature group {name!r} has versions {names}: name one")
    known = [g.versioned_name for g in FEATURE_GROUPS]
    raise KeyError(f"no feature group {name!r}; known: {known}")
