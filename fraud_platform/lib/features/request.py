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

STANDARD_REQUEST_FEATURES: tuple[RequestFeature, ...] = (
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

# Declared derivations for thin data (card, merchant/terminal, amount and time only): the
# amount against the card's own spending, and the merchant's fraud labels known at the time
# as rates over the same windows as its transactions (``catalog.CARD_SPENDING`` and the v2 of
# the merchant groups). The 30-day merchant rate is the standard ``merchant_fraud_rate_30d``.
_MERCHANT_RATE = "Fraud labels known at the merchant in {w} over its transactions in {w}."
THIN_REQUEST_FEATURES: tuple[RequestFeature, ...] = (
    *(
        RequestFeature(
            f"amount_to_card_mean_{w}",
            "float",
            f"Amount over the card's mean amount in the last {w}.",
            ratio=("amount", f"card_spend_mean_{w}"),
        )
        for w in ("1d", "7d", "30d")
    ),
    RequestFeature(
        "seconds_since_last_card_spend",
        "float",
        "Seconds since the card's previous transaction.",
        elapsed_since="card_spend_last_time",
    ),
    RequestFeature(
        "merchant_fraud_rate_1d",
        "float",
        _MERCHANT_RATE.format(w="24 hours"),
        ratio=("merchant_fraud_labels_1d", "merchant_txn_count_24h"),
        null_numerator_is_zero=True,
    ),
    RequestFeature(
        "merchant_fraud_rate_7d",
        "float",
        _MERCHANT_RATE.format(w="7 days"),
        ratio=("merchant_fraud_labels_7d", "merchant_txn_count_7d"),
        null_numerator_is_zero=True,
    ),
    RequestFeature(
        "seconds_since_merchant_fraud_label",
        "float",
        "Seconds since the merchant's latest fraud label became known.",
        elapsed_since="merchant_last_fraud_label_time",
    ),
)
# Every request feature declared (their dtypes are looked up here by name).
REQUEST_FEATURES: tuple[RequestFeature, ...] = (*STANDARD_REQUEST_FEATURES, *THIN_REQUEST_FEATURES)


def request_feature(name: str) -> RequestFeature:
    for feature in REQUEST_FEATURES:
        if feature.name == name:
            return feature
    raise KeyError(f"no request feature {name!r}")


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


def _value(name: str, *sources: Mapping[str, Any]) -> Any:
    for source in sources:
        if name in source:
            return source[name]
    return None


def declared_value(
    feature: RequestFeature,
    txn: Mapping[str, Any],
    looked_up: Mapping[str, Any],
    derived: Mapping[str, Any],
) -> float | None:
    """The value of a declared derivation (``RequestFeature.ratio`` / ``elapsed_since``)."""
    if feature.elapsed_since is not None:
        earlier = _value(feature.elapsed_since, derived, looked_up, txn)
        return _seconds_between(txn["event_time"], earlier)
    assert feature.ratio is not None
    numerator_name, denominator_name = feature.ratio
    numerator = _value(numerator_name, derived, looked_up, txn)
    denominator = _value(denominator_name, derived, looked_up, txn)
    if numerator is None and feature.null_numerator_is_zero:
        numerator = 0.0
    if numerator is None or not denominator:
        return None
    return float(numerator) / float(denominator)


def model_row(
    txn: Mapping[str, Any], looked_up: Mapping[str, Any], service: FeatureService
) -> dict[str, Any]:
    """The model's input for one transaction: request features plus looked-up group features."""
    derived = request_features(txn, looked_up)
    for feature in service.request_features:
        if feature.declared:
            derived[feature.name] = declared_value(feature, txn, looked_up, derived)
    return {
        name: derived[name] if name in derived else looked_up.get(name)
        for name in service.model_features
    }
