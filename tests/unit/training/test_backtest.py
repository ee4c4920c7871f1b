"""Backtest metrics equal lib/evaluation and scikit-learn on the same slice; the range is
start-inclusive, end-exclusive; unlabelled rows are scored but not in the label metrics."""

from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from catboost import CatBoostClassifier
from sklearn.metrics import average_precision_score, roc_auc_score

from fraud_platform.lib.model.input import predict_proba, to_model_input
from fraud_platform.lib.training import backtest, evaluation

START = datetime(2026, 2, 1, tzinfo=UTC)
N = 24 * 12  # hourly rows over 12 days


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    rng = np.random.default_rng(5)
    amount = rng.lognormal(3.5, 1.0, N)
    channel = rng.choice(["ecommerce", "p2p", "card_present"], N)
    y = ((amount > 60) & (channel == "p2p")) | (rng.random(N) < 0.05)
    return pl.DataFrame(
        {
            "transaction_id": [f"t{i:04d}" for i in range(N)],
            "event_time": [START + timedelta(hours=i) for i in range(N)],
            "is_fraud": y,
            "amount": amount,
            "channel": channel,
        }
    )


def _model(frame: pl.DataFrame, iterations: int, seed: int) -> CatBoostClassifier:
    pool = to_model_input(
        frame, ["amount", "channel"], ["channel"], label=frame["is_fraud"].cast(pl.Int8).to_numpy()
    )
    return CatBoostClassifier(
        iterations=iterations, depth=3, random_seed=seed, verbose=0, thread_count=1
    ).fit(pool)


@pytest.fixture(scope="module")
def models(frame: pl.DataFrame) -> dict[str, CatBoostClassifier]:
    return {"m:good": _model(frame, 50, 1), "m:weak": _model(frame, 2, 2)}


def test_backtest_metrics_match_evaluation_and_sklearn(frame, models) -> None:
    start, end = START + timedelta(days=3), START + timedelta(days=10)
    thresholds = {"m:good": {"review": 0.5, "decline": 0.9}}
    result = backtest.backtest(
        models, frame, start, end, review_budget_per_day=4, thresholds=thresholds
    )
    window = frame.filter((pl.col("event_time") >= start) & (pl.col("event_time") < end))
    assert result.rows == window.height == 7 * 24
    y = window["is_fraud"].to_numpy()
    for name, model in models.items():
        s = predict_proba(model, window)
        m = result.models[name]
        assert m.rows == window.height and m.positives == int(y.sum())
        assert m.auc_roc == pytest.approx(roc_auc_score(y, s))
        assert m.average_precision == pytest.approx(average_precision_score(y, s))
        expected = evaluation.evaluate(
            y,
            s,
            event_time=window["event_time"].to_numpy(),
            fraud_type=[None] * window.height,
            channel=window["channel"].to_list(),
            review_budget_per_day=4,
        )
        assert m.reviewed_at_budget == expected.reviewed_at_budget == 7 * 4
        assert m.precision_at_budget == pytest.approx(expected.precision_at_budget)
        assert m.recall_at_budget == pytest.approx(expected.recall_at_budget)
        assert len(m.per_day) == 7 and sum(d["rows"] for d in m.per_day) == window.height
        day0 = window.filter(pl.col("event_time").dt.date() == date(2026, 2, 4))
        s0 = predict_proba(model, day0)
        assert m.per_day[0]["day"] == "2026-02-04"
        assert m.per_day[0]["average_precision"] == pytest.approx(
            average_precision_score(day0["is_fraud"].to_numpy(), s0)
        )
        scored = result.scores.filter(pl.col("model_tag") == name)
        assert scored["transaction_id"].to_list() == window["transaction_id"].to_list()
        np.testing.assert_allclose(scored["score"].to_numpy(), s)
    good = result.models["m:good"]
    s = predict_proba(models["m:good"], window)
    assert good.decisions == {
        "approve": int((s < 0.5).sum()),
        "review": int(((s >= 0.5) & (s < 0.9)).sum()),
        "decline": int((s >= 0.9).sum()),
    }
    assert good.flagged == int((s >= 0.5).sum())
    assert result.models["m:weak"].decisions == {}  # no thresholds given
    assert result.table().height == 2 and "| m:good |" in result.markdown()
    assert set(result.scores.columns) == set(backtest.SCORE_COLUMNS)


def test_range_is_start_inclusive_end_exclusive(frame, models) -> None:
    start = START + timedelta(hours=5)  # exactly the 6th row's event_time
    end = START + timedelta(hours=15)  # exactly the 16th row's event_time: excluded
    result = backtest.backtest({"m": models["m:good"]}, frame, start, end)
    ids = result.scores["transaction_id"].to_list()
    assert ids[0] == "t0005" and ids[-1] == "t0014" and len(ids) == 10
    # naive datetimes and ISO strings are UTC
    naive = backtest.backtest(
        {"m": models["m:good"]}, frame, start.replace(tzinfo=None), "2026-02-01T15:00:00"
    )
    assert naive.scores["transaction_id"].to_list() == ids
    with pytest.raises(ValueError, match="empty"):
        backtest.backtest({"m": models["m:good"]}, frame, end, start)


def test_unlabelled_rows_are_scored_but_not_in_label_metrics(frame, models) -> None:
    partly = frame.with_columns(
        pl.when(pl.col("transaction_id") < "t0100")
        .then(None)
        .otherwise(pl.col("is_fraud"))
        .alias("is_fraud")
    )
    result = backtest.backtest({"m": models["m:good"]}, partly, START, START + timedelta(days=12))
    m = result.models["m"]
    labelled = frame.filter(pl.col("transaction_id") >= "t0100")
    assert m.rows == N and m.labelled == labelled.height
    s = predict_proba(models["m:good"], labelled)
    assert m.average_precision == pytest.approx(
        average_precision_score(labelled["is_fraud"].to_numpy(), s)
    )
    assert result.scores["is_fraud"].null_count() == 100


def test_stored_scores_replace_the_same_model_and_range(frame, models, tmp_path) -> None:
    from fraud_platform.defs.serving.assets import BACKTEST_SCORES_TABLE, store_scores
    from fraud_platform.lib.storage.delta import DeltaStore

    delta = DeltaStore(str(tmp_path))
    start, end = START + timedelta(days=1), START + timedelta(days=3)
    result = backtest.backtest(models, frame, start, end)
    store_scores(delta, result.scores, list(models), start, end)
    store_scores(delta, result.scores, list(models), start, end)  # a re-run: no duplicates
    later = backtest.backtest(models, frame, end, end + timedelta(days=1))
    store_scores(delta, later.scores, list(models), end, end + timedelta(days=1))
    stored = delta.read(BACKTEST_SCORES_TABLE)
    assert stored.height == 2 * 3 * 24
    assert stored.select("model_tag", "transaction_id").is_duplicated().sum() == 0
