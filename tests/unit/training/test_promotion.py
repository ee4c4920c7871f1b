"""The promotion gate's rules: margin boundary, no champion, unscorable champion, same tag."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from fraud_platform.lib.training import metrics, promotion

N = 400


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    y = rng.random(N) < 0.1
    good = np.where(y, rng.uniform(0.4, 1.0, N), rng.uniform(0.0, 0.6, N))
    bad = rng.random(N)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    times = np.array(
        [
            np.datetime64((start + timedelta(minutes=30 * i)).replace(tzinfo=None), "us")
            for i in range(N)
        ]
    )
    return y, good, bad, times


def test_better_challenger_is_promoted_worse_is_not(sample) -> None:
    y, good, bad, times = sample
    up = promotion.compare(bad, good, y, times, champion_tag="m:old", challenger_tag="m:new")
    assert up.promote and up.decision == promotion.PROMOTED
    assert up.challenger["average_precision"] == pytest.approx(metrics.average_precision(y, good))
    assert up.champion["average_precision"] == pytest.approx(metrics.average_precision(y, bad))
    assert up.rows == N and up.positives == int(y.sum())
    assert up.period_start.startswith("2026-03-01T00:00") and up.period_end > up.period_start

    down = promotion.compare(good, bad, y, times, champion_tag="m:old", challenger_tag="m:new")
    assert not down.promote and down.decision == promotion.KEPT
    assert "<" in down.reason


def test_margin_boundary(sample) -> None:
    y, good, _, times = sample
    ap = metrics.average_precision(y, good)
    margin = 0.01
    # a champion exactly `margin` worse than the challenger: the challenger reaches it
    champion_ap = ap - margin

    def with_champion_metric(value: float):
        original = promotion.metrics

        def fake(y_, s, t, **kw):
            out = original(y_, s, t, **kw)
            if s is champion_scores:
                out["average_precision"] = value
            return out

        return fake

    champion_scores = good.copy()
    for value, expected in ((champion_ap, True), (champion_ap + 1e-6, False), (ap, False)):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(promotion, "metrics", with_champion_metric(value))
            decision = promotion.compare(
                champion_scores, good, y, times, margin=margin, champion_tag="a", challenger_tag="b"
            )
        assert decision.promote is expected, (value, decision.reason)


def test_identical_scores_need_the_margin(sample) -> None:
    y, good, _, times = sample
    same = promotion.compare(good, good.copy(), y, times, champion_tag="a", challenger_tag="b")
    assert not same.promote and same.decision == promotion.KEPT
    zero = promotion.compare(
        good, good.copy(), y, times, margin=0.0, champion_tag="a", challenger_tag="b"
    )
    assert zero.promote


def test_no_champion_promotes(sample) -> None:
    y, good, _, times = sample
    decision = promotion.compare(None, good, y, times, champion_tag=None, challenger_tag="m:1")
    assert decision.promote and decision.reason == "no champion yet"
    assert decision.champion == {}


def test_unscorable_champion_promotes_with_the_reason(sample) -> None:
    y, good, _, times = sample
    decision = promotion.compare(
        None,
        good,
        y,
        times,
        champion_tag="m:0",
        challenger_tag="m:1",
        champion_problem="features not in the comparison frame: ['x']",
    )
    assert decision.promote and "cannot be scored" in decision.reason and "['x']" in decision.reason


def test_same_tag_is_no_change(sample) -> None:
    y, good, _, times = sample
    decision = promotion.compare(good, good, y, times, champion_tag="m:1", challenger_tag="m:1")
    assert not decision.promote and decision.decision == promotion.NO_CHANGE


def test_other_metric_and_bad_arguments(sample) -> None:
    y, good, bad, times = sample
    decision = promotion.compare(
        bad, good, y, times, metric="auc_roc", champion_tag="a", challenger_tag="b"
    )
    assert decision.promote and decision.metric == "auc_roc"
    assert decision.challenger["auc_roc"] == pytest.approx(metrics.roc_auc(y, good))
    with pytest.raises(ValueError, match="metric"):
        promotion.compare(bad, good, y, times, metric="accuracy")
    with pytest.raises(ValueError, match="margin"):
        promotion.compare(bad, good, y, times, margin=-0.1)
    assert decision.to_dict()["challenger"]["auc_roc"] == pytest.approx(
        decision.challenger["auc_roc"]
    )


def test_comparison_period_is_the_challengers_test_split() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = 24 * 20
    frame = pl.DataFrame(
        {
            "transaction_id": [f"t{i:04d}" for i in range(rows)],
            "event_time": [start + timedelta(hours=i) for i in range(rows)],
            "is_fraud": [i % 7 == 0 for i in range(rows)],
        }
    )
    metadata = {"params": {"test_days": 4.0, "validation_days": 3.0, "gap_days": 1.0}}
    period = promotion.comparison_period(frame, metadata)
    last = frame["event_time"].max()
    assert period["event_time"].min() >= last - timedelta(days=4)
    assert period.height == 4 * 24 + 1
    assert promotion.split_config({}).test_days == 5.0


def test_run_gate_champion_without_the_features() -> None:
    from catboost import CatBoostClassifier

    rng = np.random.default_rng(1)
    n = 300
    x = rng.normal(size=n)
    y = (x + rng.normal(scale=0.5, size=n)) > 1
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {"event_time": [start + timedelta(hours=i) for i in range(n)], "is_fraud": y, "a": x}
    )
    challenger = CatBoostClassifier(iterations=20, verbose=0, thread_count=1).fit(
        frame.select("a").to_pandas(), y.astype(int)
    )
    champion = CatBoostClassifier(iterations=5, verbose=0, thread_count=1).fit(
        pl.DataFrame({"b": x}).to_pandas(), y.astype(int)
    )
    decision = promotion.run_gate(
        frame, challenger, champion, challenger_tag="m:2", champion_tag="m:1"
    )
    assert decision.promote and "['b']" in decision.reason
    kept = promotion.run_gate(
        frame, challenger, challenger, challenger_tag="m:2", champion_tag="m:1"
    )
    assert not kept.promote  # same scores: below champion + margin


def test_model_store_keeps_every_decision(tmp_path) -> None:
    from catboost import CatBoostClassifier

    from fraud_platform.lib.serving import registry
    from fraud_platform.lib.storage.delta import DeltaStore
    from fraud_platform.resources.model_store import ModelStoreResource

    delta = DeltaStore(str(tmp_path / "delta"))
    store = ModelStoreResource(home=str(tmp_path / "bentoml"), delta=delta)
    model = CatBoostClassifier(iterations=2, verbose=0, allow_writing_files=False)
    model.fit([[0.0], [1.0], [0.0], [1.0]], [0, 1, 0, 1])
    a = store.save_catboost("fraud_catboost", model, metadata={}, labels={})
    b = store.save_catboost("fraud_catboost", model, metadata={}, labels={})
    assert store.promotion_log("fraud_catboost") == []
    decision = {"decision": promotion.PROMOTED, "reason": "no champion yet", "challenger_tag": a}
    assert store.record_gate(decision, promote=True, run_id="r1") == a
    decision = {"decision": promotion.KEPT, "reason": "worse", "challenger_tag": b}
    assert store.record_gate(decision, promote=False, run_id="r2") == a
    log = store.promotion_log("fraud_catboost")
    assert [d["challenger_tag"] for d in log] == [a, b]
    assert [d["champion_after"] for d in log] == [a, a]
    assert delta.exists(registry.TABLE)
