"""Feature services: the group versions and request features each model consumes.

As in a Feast feature repo, a service is declared as data and versioned
(``fraud_scoring_v1``, ``fraud_scoring_v2``); it names its group versions explicitly, so a new
group version in the catalog reaches no model until a service pins it. Training records the
service's name in the model's registry entry (``SERVICE_METADATA_KEY``); the scoring path
reads online what the served model's service names (``service_for_model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fraud_platform.lib.features import catalog
from fraud_platform.lib.features.registry import FeatureGroup, FeatureService, RequestFeature
from fraud_platform.lib.features.request import (
    STANDARD_REQUEST_FEATURES,
    THIN_REQUEST_FEATURES,
    request_feature,
)

SERVICE_METADATA_KEY = "feature_service"


def fraud_scoring_service(
    name: str,
    groups: tuple[FeatureGroup, ...],
    request_features: tuple[RequestFeature, ...] = STANDARD_REQUEST_FEATURES,
) -> FeatureService:
    """A service whose model consumes the request features and every numeric group feature."""
    numeric = tuple(
        f.name for group in groups for f in group.features if f.dtype in ("int", "float")
    )
    return FeatureService(
        name=name,
        groups=groups,
        model_features=tuple(f.name for f in request_features) + numeric,
        categorical_features=tuple(f.name for f in request_features if f.categorical),
        request_features=request_features,
    )


FRAUD_SCORING_V1 = fraud_scoring_service(
    "fraud_scoring_v1",
    (
        catalog.USER_TXN_VELOCITY,
        catalog.CARD_VELOCITY,
        catalog.ACCOUNT_SECURITY,
        catalog.USER_DEVICE_HISTORY,
        catalog.USER_COUNTRY_HISTORY,
        catalog.MERCHANT_ACTIVITY,
        catalog.MERCHANT_FRAUD,
        catalog.COUNTERPARTY_INBOUND,
        catalog.USER_COUNTERPARTY_HISTORY,
        catalog.ACCOUNT_PROFILE,
    ),
)


def swap_group(
    groups: tuple[FeatureGroup, ...], old: FeatureGroup, new: FeatureGroup
) -> tuple[FeatureGroup, ...]:
    """``groups`` with ``old`` replaced by ``new`` in its place (the order is the feature order)."""
    if old not in groups:
        raise ValueError(f"{old.versioned_name} is not among the groups to swap it in")
    return tuple(new if group == old else group for group in groups)


FRAUD_SCORING_V2 = fraud_scoring_service(
    "fraud_scoring_v2",
    swap_group(FRAUD_SCORING_V1.groups, catalog.USER_TXN_VELOCITY, catalog.USER_TXN_VELOCITY_V2),
)

# For a team whose history has only card (and user), merchant/terminal, amount and time: card
# spending velocity and amount deviation over 1/7/30 days, merchant activity and its fraud
# labels known at the time as rates. No request feature reads another contract field.
THIN_FIELDS = ("transaction_id", "event_time", "user_id", "card_id", "merchant_id", "amount")
FRAUD_SCORING_THIN_V1 = fraud_scoring_service(
    "fraud_scoring_thin_v1",
    (catalog.CARD_SPENDING, catalog.MERCHANT_ACTIVITY_V2, catalog.MERCHANT_FRAUD_V2),
    request_features=(
        request_feature("amount"),
        request_feature("hour_of_day"),
        request_feature("merchant_fraud_rate_30d"),
        *THIN_REQUEST_FEATURES,
    ),
)

FEATURE_SERVICES: tuple[FeatureService, ...] = (
    FRAUD_SCORING_V1,
    FRAUD_SCORING_V2,
    FRAUD_SCORING_THIN_V1,
)
# Models registered before services were recorded were trained on fraud_scoring_v1.
DEFAULT_SERVICE = FRAUD_SCORING_V1


def validate_services(
    services: tuple[FeatureService, ...], groups: tuple[FeatureGroup, ...]
) -> None:
    """Service names are unique and every pinned group version is the catalog's declaration."""
    names = [service.name for service in services]
    if len(set(names)) != len(names):
        raise ValueError(f"feature services declared twice: {names}")
    declared = {group.versioned_name: group for group in groups}
    for service in services:
        for group in service.groups:
            if declared.get(group.versioned_name) != group:
                raise ValueError(
                    f"feature service {service.name} pins {group.versioned_name}, which is not "
                    "declared in the catalog (or declared differently)"
                )


validate_services(FEATURE_SERVICES, catalog.FEATURE_GROUPS)


def feature_service(name: str) -> FeatureService:
    for service in FEATURE_SERVICES:
        if service.name == name:
            return service
    known = [service.name for service in FEATURE_SERVICES]
    raise KeyError(f"no feature service {name!r}; known: {known}")


def service_for_model(metadata: Mapping[str, Any]) -> FeatureService:
    """The service a model was trained on, from its registry metadata (v1 when unrecorded)."""
    name = metadata.get(SERVICE_METADATA_KEY)
    return DEFAULT_SERVICE if name is None else feature_service(name)
