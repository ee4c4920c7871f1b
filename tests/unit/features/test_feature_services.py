"""Feature services pin group versions: versioned names unique in the catalog, feature names
unique per service, and a model's registry entry names the service it reads."""

import dataclasses
from datetime import timedelta

import pytest

from fraud_platform.lib.features.catalog import (
    CARD_VELOCITY,
    FEATURE_GROUPS,
    USER_TXN_VELOCITY,
    USER_TXN_VELOCITY_V2,
    feature_group,
)
from fraud_platform.lib.features.registry import Feature, FeatureService, validate_registry
from fraud_platform.lib.features.services import (
    FEATURE_SERVICES,
    FRAUD_SCORING_V1,
    FRAUD_SCORING_V2,
    SERVICE_METADATA_KEY,
    feature_service,
    fraud_scoring_service,
    service_for_model,
    validate_services,
)


def test_catalog_holds_two_versions_of_a_group_side_by_side() -> None:
    names = [g.versioned_name for g in FEATURE_GROUPS]
    assert {"user_txn_velocity_v1", "user_txn_velocity_v2"} <= set(names)
    assert len(names) == len(set(names))
    assert USER_TXN_VELOCITY_V2.feature_names == [
        *USER_TXN_VELOCITY.feature_names,
        "user_amount_min_7d",
    ]
    validate_registry(FEATURE_GROUPS)  # the same feature names in two versions are accepted


def test_catalog_rejects_a_group_version_declared_twice() -> None:
    again = dataclasses.replace(CARD_VELOCITY, description="another card_velocity_v1")
    with pytest.raises(ValueError, match="card_velocity_v1 declared twice"):
        validate_registry((CARD_VELOCITY, USER_TXN_VELOCITY, again))


def test_catalog_rejects_a_feature_declared_twice_in_one_group() -> None:
    twice = dataclasses.replace(
        CARD_VELOCITY, version=9, features=(*CARD_VELOCITY.features, CARD_VELOCITY.features[0])
    )
    with pytest.raises(ValueError, match=r"card_velocity_v9: features \['card_txn_count_10m'\]"):
        validate_registry((twice,))


def test_feature_group_lookup_needs_a_version_when_there_are_several() -> None:
    assert feature_group("user_txn_velocity_v2") is USER_TXN_VELOCITY_V2
    assert feature_group("card_velocity") is CARD_VELOCITY
    with pytest.raises(KeyError, match="has versions"):
        feature_group("user_txn_velocity")


def test_services_pin_explicit_group_versions() -> None:
    assert USER_TXN_VELOCITY in FRAUD_SCORING_V1.groups
    assert USER_TXN_VELOCITY_V2 not in FRAUD_SCORING_V1.groups
    assert USER_TXN_VELOCITY_V2 in FRAUD_SCORING_V2.groups
    assert USER_TXN_VELOCITY not in FRAUD_SCORING_V2.groups
    # v1's model input is unchanged by v2's arrival in the catalog
    assert len(FRAUD_SCORING_V1.model_features) == 58  # 54 + the account-profile features
    assert "user_amount_min_7d" not in FRAUD_SCORING_V1.model_features
    assert set(FRAUD_SCORING_V2.model_features) - set(FRAUD_SCORING_V1.model_features) == {
        "user_amount_min_7d"
    }
    assert FRAUD_SCORING_V2.categorical_features == FRAUD_SCORING_V1.categorical_features
    for service in FEATURE_SERVICES:
        assert len(service.model_features) == len(set(service.model_features))


def test_service_rejects_two_versions_of_one_group() -> None:
    with pytest.raises(ValueError, match="pins user_txn_velocity_v1 and user_txn_velocity_v2"):
        FeatureService("both", (USER_TXN_VELOCITY, USER_TXN_VELOCITY_V2), (), ())


def test_service_rejects_a_request_feature_named_like_a_group_feature() -> None:
    (clash,) = [f for f in FRAUD_SCORING_V1.request_features if f.name == "amount"]
    renamed = dataclasses.replace(clash, name="card_txn_count_1h")
    with pytest.raises(ValueError, match="'card_txn_count_1h' declared twice"):
        fraud_scoring_service("clash", (CARD_VELOCITY,), (renamed,))


def test_service_rejects_model_features_it_does_not_provide() -> None:
    with pytest.raises(ValueError, match=r"unknown model features \['user_amount_min_7d'\]"):
        FeatureService("short", (USER_TXN_VELOCITY,), ("user_amount_min_7d",), ())


def test_services_must_pin_the_catalogs_declarations() -> None:
    stray = dataclasses.replace(
        USER_TXN_VELOCITY,
        version=3,
        features=(Feature("user_amount_min_1h", "min", "amount", timedelta(hours=1)),),
    )
    service = fraud_scoring_service("stray", (stray,), ())
    with pytest.raises(ValueError, match="pins user_txn_velocity_v3, which is not declared"):
        validate_services((service,), FEATURE_GROUPS)
    validate_services((service,), (*FEATURE_GROUPS, stray))  # registered: accepted
    with pytest.raises(ValueError, match="declared twice"):
        validate_services((FRAUD_SCORING_V1, FRAUD_SCORING_V1), FEATURE_GROUPS)


def test_model_metadata_names_its_service_and_old_models_read_v1() -> None:
    assert service_for_model({SERVICE_METADATA_KEY: "fraud_scoring_v2"}) is FRAUD_SCORING_V2
    assert service_for_model({SERVICE_METADATA_KEY: "fraud_scoring_v1"}) is FRAUD_SCORING_V1
    assert service_for_model({"features": ["amount"]}) is FRAUD_SCORING_V1
    assert feature_service("fraud_scoring_v2") is FRAUD_SCORING_V2
    with pytest.raises(KeyError, match="no feature service 'fraud_scoring_v9'"):
        service_for_model({SERVICE_METADATA_KEY: "fraud_scoring_v9"})
