"""The training set's cutoff (``as_of``): default the newest transaction, configurable by the
asset config or FRAUD_PLATFORM_TRAINING_AS_OF; labels known by then, matured by then."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from fraud_platform.defs.training.assets import TrainingSetConfig
from fraud_platform.lib.features.training_frame import label_transactions, resolve_as_of
from fraud_platform.settings import Settings, SettingsError

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")
TRANSACTIONS = pl.DataFrame(
    {
        "transaction_id": [f"t{d}" for d in range(1, 11)],
        "user_id": ["u"] * 10,
        "event_time": [T0 + timedelta(days=d) for d in range(1, 11)],
    },
    schema_overrides={"event_time": TS},
)
# t2 is a fraud reported on day 5, t3 a fraud reported on day 7
LABELS = pl.DataFrame(
    {
        "transaction_id": ["t2", "t3"],
        "is_fraud": [True, True],
        "fraud_type": ["stolen_card", "stolen_card"],
        "label_time": [T0 + timedelta(days=5), T0 + timedelta(days=7)],
    },
    schema_overrides={"label_time": TS},
)


def test_resolve_as_of_defaults_to_the_newest_transaction() -> None:
    assert resolve_as_of(TRANSACTIONS, None) == T0 + timedelta(days=10)
    cutoff = T0 + timedelta(days=6)
    assert resolve_as_of(TRANSACTIONS, cutoff) == cutoff


def test_resolve_as_of_refuses_a_cutoff_before_the_data() -> None:
    with pytest.raises(ValueError, match="before the first transaction"):
        resolve_as_of(TRANSACTIONS, T0)


def test_label_transactions_at_a_cutoff_knows_only_what_was_known_then() -> None:
    # as_of day 6, maturity 2 days: t1..t4 matured; t5, t6 too young; t7.. after the cutoff.
    # t2's fraud label (day 5) is known; t3's (day 7) is not yet: t3 counts as legitimate.
    labelled = label_transactions(
        TRANSACTIONS, LABELS, as_of=T0 + timedelta(days=6), maturity=timedelta(days=2)
    )
    assert labelled.frame["transaction_id"].to_list() == ["t1", "t2", "t3", "t4"]
    assert labelled.frame["is_fraud"].to_list() == [False, True, False, False]
    assert labelled.unmatured_excluded == 2
    assert labelled.positives == 1


def test_training_set_config_cutoff_from_config_then_setting(monkeypatch) -> None:
    monkeypatch.delenv("FRAUD_PLATFORM_TRAINING_AS_OF", raising=False)
    assert TrainingSetConfig().cutoff() is None
    assert TrainingSetConfig(as_of="2026-03-05").cutoff() == datetime(2026, 3, 5, tzinfo=UTC)
    monkeypatch.setenv("FRAUD_PLATFORM_TRAINING_AS_OF", "2026-03-04T12:00:00+01:00")
    assert TrainingSetConfig().cutoff() == datetime(2026, 3, 4, 11, tzinfo=UTC)
    assert TrainingSetConfig(as_of="2026-03-05").cutoff() == datetime(2026, 3, 5, tzinfo=UTC)


def test_settings_training_as_of_is_an_iso_date_in_utc() -> None:
    assert Settings.from_env({}).training_as_of is None
    parsed = Settings.from_env({"FRAUD_PLATFORM_TRAINING_AS_OF": "2026-03-04"}).training_as_of
    assert parsed == datetime(2026, 3, 4, tzinfo=UTC)
    with pytest.raises(SettingsError, match="FRAUD_PLATFORM_TRAINING_AS_OF='yesterday'"):
        Settings.from_env({"FRAUD_PLATFORM_TRAINING_AS_OF": "yesterday"})
