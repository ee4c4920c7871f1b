"""Request-time features: derived at scoring time from the transaction and the lookup.

``request_features`` is THE implementation of every feature derived at scoring time. The
offline training frame applies it row by row to point-in-time-joined rows, and the scoring
service applies it to one request plus the online lookup: one code path, no skew.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fraud_platform.lib.features.registry import FeatureService, RequestFeature

REQUEST_FEATURES: tuple[RequestFeature, ...] = (
    RequestFeature("amount", "float", "Transaction amount in its currency."),
    RequestFeature("channel", "str", "Payment channel.", categorical=True),
    RequestFeature("merchant_category", "str", "Merchant category.", categorical=True),
    RequestFeature("hour_of_day", "int", "UTC hour of the event."),
    RequestFeature("amount_to_user_mean_30d", "float", "Amount over the user's 30-day mean."),
    RequestFeature("amount_zscore_30d", "float", "Amount z-score against the user's 30 days."),
    RequestFeature("seconds_since_last_user_txn", "float", "Seconds since the user's last txn."),
    RequestFeature("seconds_since_last_card_txn", "float", "Seconds since the card's last txn."),
    RequestFeature("minutes_since_password_change", "float", "Minutes since a password change."),
    RequestFeature("minutes_since_twofa_disabled", "float", "Minutes since 2FA was disabled."),
    RequestFeature("minutes_since_device_added", "float", "Minutes since a device was added."),
    RequestFeature(
        "minutes_since_withdrawal_address_added", "float", "Minutes since a withdrawal address."
    ),
    RequestFeature("is_new_device_for_user", "int", "1 if the user never paid from this device."),
    RequestFeature("is_new_country_for_user", "int", "1 if the user never paid in this country."),
    RequestFeature(
        "merchant_fraud_rate_30d",
        "float",
        "Frauds known at the merchant in 30 days over its transactions in 30 days.",
    ),
    RequestFeature(
        "is_first_transfer_to_counterparty",
        "int",
        "1 for a p2p transfer to a receiver this user never paid before.",
    ),
    RequestFeature(
        "account_age_days", "float", "Days from the account's signup to the transaction."
    ),
    RequestFeature(
        "is_away_from_home_country",
        "int",
        "1 if the transaction's country is not the profile's home country.",
    ),
    RequestFeature("account_type", "str", "The profile's account type.", categorical=True),
)

_SINCE_MINUTES = {
    "minutes_since_password_change": "last_password_change_time",
    "minutes_since_twofa_disabled": "last_twofa_disabled_time",
    "minutes_since_device_added": "last_device_added_time",
    "minutes_since_withdrawal_address_added": "last_withdrawal_address_added_time",
}


def _seconds_between(later: datetime, earlier: datetime | None) -> float | None:
    return None if earlier is None else (later - earlier).total_seconds()


def _merchant_fraud_rate(looked_up: Mapping[str, Any]) -> float | None:
    """Known frauds over transactions, both over 30 days; no known fraud counts as zero."""
    transactions = looked_up.get("merchant_txn_count_30d")
    if not transactions:
        return None
    return (looked_up.get("merchant_fraud_labels_30d") or 0) / transactions


def _away_from_home(txn: Mapping[str, Any], looked_up: Mapping[str, Any]) -> int | None:
    home = looked_up.get("home_country")
    return None if home is None else int(txn.get("country") != home)


def request_features(txn: Mapping[str, Any], looked_up: Mapping[str, Any]) -> dict[str, Any]:
    """Features computed from the transaction itself and the features known before it
    (profile-derived ones are null when no profile was known)."""
    event_time: datetime = txn["event_time"]
    amount = float(txn["amount"])
    mean = looked_up.get("user_amount_mean_30d")
    std = looked_up.get("user_amount_std_30d")
    features: dict[str, Any] = {
        "amount": amount,
        "channel": txn["channel"],
        "merchant_category": txn["merchant_category"],
        "hour_of_day": event_time.hour,
        "amount_to_user_mean_30d": amount / mean if mean else None,
        "amount_zscore_30d": (amount - mean) / std if mean is not None and std else None,
        "seconds_since_last_user_txn": _seconds_between(
            event_time, looked_up.get("user_last_txn_time")
        ),
        "seconds_since_last_card_txn": _seconds_between(
            event_time, looked_up.get("card_last_txn_time")
        ),
        "is_new_device_for_user": int(looked_up.get("user_device_txn_count") is None),
        "is_new_country_for_user": int(looked_up.get("user_country_txn_count") is None),
        "merchant_fraud_rate_30d": _merchant_fraud_rate(looked_up),
        "is_first_transfer_to_counterparty": int(
            txn.get("channel") == "p2p"
            and txn.get("counterparty_id") is not None
            and not looked_up.get("user_counterparty_transfer_count")
        ),
        "is_away_from_home_country": _away_from_home(txn, looked_up),
        "account_type": looked_up.get("profile_account_type"),
    }
    signup = _seconds_between(event_time, looked_up.get("signup_time"))
    features["account_age_days"] = None if signup is None else signup / 86_400.0
    for name, source in _SINCE_MINUTES.items():
        seconds = _seconds_between(event_time, looked_up.get(source))
        features[name] = None if seconds is None else seconds / 60.0
    return features


def model_row(
    txn: Mapping[str, Any], looked_up: Mapping[str, Any], service: FeatureService
) -> dict[str, Any]:
    """The model's input for one transaction: request features plus looked-up group features."""
    derived = request_features(txn, looked_up)
    return {
        name: derived[name] if name in derived else looked_up.get(name)
        for name in service.model_features
    }
