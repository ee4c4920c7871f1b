"""The test window of the evaluation protocol: labels from a file, from the platform or by
maturity, and the exclusion of cards already known compromised (hand-made rows)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from fraud_platform.lib.training.protocol import ProtocolConfig, window_transactions
from fraud_platform.lib.training.window import (
    LabelFileError,
    apply_file_labels,
    known_compromised_cards,
    label_window,
    read_label_file,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TS = pl.Datetime("us", "UTC")


def _transactions(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """(transaction_id, card_id, days after T0)."""
    return pl.DataFrame(
        {
            "transaction_id": [r[0] for r in rows],
            "card_id": [r[1] for r in rows],
            "event_time": [T0 + timedelta(days=r[2]) for r in rows],
        },
        schema_overrides={"event_time": TS},
    )


def _labels(rows: list[tuple[str, bool, float]]) -> pl.DataFrame:
    """(transaction_id, is_fraud, label day after T0)."""
    return pl.DataFrame(
        {
            "transaction_id": [r[0] for r in rows],
            "is_fraud": [r[1] for r in rows],
            "fraud_type": ["stolen_card" if r[1] else None for r in rows],
            "label_time": [T0 + timedelta(days=r[2]) for r in rows],
        },
        schema={
            "transaction_id": pl.String,
            "is_fraud": pl.Boolean,
            "fraud_type": pl.String,
            "label_time": TS,
        },
    )


# history: card k1 defrauded, labelled on day 8 (before the window at day 10) -> known;
# card k2 defrauded, labelled on day 11 (inside the window) -> not known before it;
# card k3 reviewed legit before the window -> not compromised.
TRANSACTIONS = _transactions(
    [
        ("h1", "k1", 5.0),
        ("h2", "k2", 6.0),
        ("h3", "k3", 7.0),
        ("w1", "k1", 10.5),
        ("w2", "k2", 10.6),
        ("w3", "k3", 11.0),
        ("w4", "k4", 12.0),
    ]
)
LABELS = _labels([("h1", True, 8.0), ("h2", True, 11.0), ("h3", False, 7.5)])


def _config(exclude: bool) -> ProtocolConfig:
    return ProtocolConfig(
        train_until=T0 + timedelta(days=9),
        test_start=T0 + timedelta(days=10),
        test_end=T0 + timedelta(days=13),
        exclude_known_compromised=exclude,
    )


def test_known_compromised_cards_are_those_with_a_fraud_label_known_before_the_window() -> None:
    assert known_compromised_cards(TRANSACTIONS, LABELS, T0 + timedelta(days=10)) == {"k1"}
    assert known_compromised_cards(TRANSACTIONS, LABELS, T0 + timedelta(days=12)) == {"k1", "k2"}


def test_window_transactions_exclude_known_compromised_cards_only_when_asked() -> None:
    window, excluded = window_transactions(TRANSACTIONS, LABELS, None, _config(exclude=True))
    assert window["transaction_id"].to_list() == ["w2", "w3", "w4"]
    assert excluded == {"cards": 1, "transactions": 1}
    window, excluded = window_transactions(TRANSACTIONS, LABELS, None, _config(exclude=False))
    assert window["transaction_id"].to_list() == ["w1", "w2", "w3", "w4"]
    assert excluded == {"cards": 0, "transactions": 0}


def test_protocol_config_refuses_a_window_before_the_cutoff() -> None:
    with pytest.raises(ValueError, match="before the training cutoff"):
        ProtocolConfig(
            train_until=T0 + timedelta(days=5), test_start=T0, test_end=T0 + timedelta(days=6)
        )
    with pytest.raises(ValueError, match="the test window is empty"):
        ProtocolConfig(train_until=T0, test_start=T0, test_end=T0)


def test_label_window_takes_the_file_then_the_platform_then_maturity() -> None:
    window = _transactions(
        [("a", "c1", 1.0), ("b", "c2", 1.0), ("c", "c3", 1.0), ("d", "c4", 9.5), ("e", "c5", 9.5)]
    )
    platform = _labels([("a", False, 2.0), ("b", True, 3.0), ("b", False, 1.5)])
    file_labels = pl.DataFrame(
        {"transaction_id": ["a", "d", "zzz"], "is_fraud": [True, False, True]}
    ).with_columns(
        pl.lit(None, pl.String).alias("fraud_type"), pl.lit(None, TS).alias("label_time")
    )
    # data clock: day 10, maturity 7 days -> transactions up to day 3 are matured
    result = label_window(
        window,
        platform,
        data_now=T0 + timedelta(days=10),
        maturity=timedelta(days=7),
        file_labels=file_labels,
    )
    labels = dict(zip(result.frame["transaction_id"], result.frame["is_fraud"], strict=True))
    # a: file says fraud (overrides the platform's legit); b: the platform's latest (fraud);
    # c: matured, unlabelled -> legit; d: file -> legit; e: young and unlabelled -> unknown
    assert labels == {"a": True, "b": True, "c": False, "d": False}
    assert result.summary() == {
        "labelled": 4,
        "from_file": 2,
        "from_platform": 1,
        "matured_unlabelled_legit": 1,
        "unknown_excluded": 1,
        "file_labels_unmatched": 1,
    }


def test_read_label_file_csv_with_0_1_and_true_false(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("transaction_id,is_fraud\nt1,1\nt2,0\nt3,true\nt4,False\nt1,1\n")
    frame = read_label_file(path)
    assert frame.select("transaction_id", "is_fraud").rows() == [
        ("t1", True),
        ("t2", False),
        ("t3", True),
        ("t4", False),
    ]


def test_read_label_file_parquet_with_booleans_and_label_time(tmp_path: Path) -> None:
    path = tmp_path / "labels.parquet"
    pl.DataFrame(
        {
            "transaction_id": ["t1", "t2"],
            "is_fraud": [True, False],
            "label_time": [datetime(2026, 3, 2), datetime(2026, 3, 3)],
        }
    ).write_parquet(path)
    frame = read_label_file(path)
    assert frame["is_fraud"].to_list() == [True, False]
    assert frame["label_time"].to_list() == [
        datetime(2026, 3, 2, tzinfo=UTC),
        datetime(2026, 3, 3, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("transaction_id,label\nt1,1\n", "lacks columns \\['is_fraud'\\]"),
        ("transaction_id,is_fraud\nt1,maybe\n", "1 rows without a usable is_fraud"),
        ("transaction_id,is_fraud\nt1,1\nt1,0\n", "1 transactions have both labels"),
    ],
)
def test_read_label_file_refuses_unusable_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(LabelFileError, match=message):
        read_label_file(path)


def test_apply_file_labels_fills_unknown_labels_of_backtest_rows() -> None:
    rows = pl.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "is_fraud": [None, False, None],
            "fraud_type": [None, None, None],
        },
        schema_overrides={"is_fraud": pl.Boolean, "fraud_type": pl.String},
    )
    file_labels = pl.DataFrame(
        {"transaction_id": ["a", "b"], "is_fraud": [True, True], "fraud_type": ["x", None]}
    )
    out = apply_file_labels(rows, file_labels)
    assert out["is_fraud"].to_list() == [True, True, None]
    assert out["fraud_type"].to_list() == ["x", None, None]
    assert out.columns == rows.columns


def test_label_window_counts_file_rows_of_left_out_transactions_as_matched() -> None:
    window = _transactions([("a", "c1", 1.0)])  # "b" was in the window but left out
    file_labels = pl.DataFrame(
        {"transaction_id": ["a", "b", "zzz"], "is_fraud": [True, True, False]}
    ).with_columns(pl.lit(None, pl.String).alias("fraud_type"))
    result = label_window(
        window,
        _labels([]),
        data_now=T0 + timedelta(days=10),
        maturity=timedelta(days=7),
        file_labels=file_labels,
        window_ids=pl.Series(["a", "b"]),
    )
    assert result.summary()["file_labels_unmatched"] == 1  # only "zzz"
    assert result.summary()["from_file"] == 1
