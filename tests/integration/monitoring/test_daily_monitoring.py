"""The daily monitoring assets on real Delta tables, a real BentoML model store and real
whylogs profiles: three decision days in bronze/scores (a normal day, a day whose amounts and
scores shifted, a quiet day), two registered models (champion and challenger), labels in
bronze/labels. Each partition reads only its day; drift flags the shifted day only; realized
performance matches the labels written; the checks' status agrees with their metadata."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from fraud_platform import names
from fraud_platform.defs.monitoring.assets import TRAINING_PROFILE_FILE
from fraud_platform.defs.monitoring.daily import daily_feature_drift, daily_served_profile
from fraud_platform.defs.monitoring.performance import daily_realized_performance, shadow_scores
from fraud_platform.defs.monitoring.prediction import daily_prediction_drift
from fraud_platform.lib.contracts.events import LABELS, SCORES, bronze_schema
from fraud_platform.lib.monitoring.profiles import profile_frame, write_profile
from fraud_platform.lib.serving.policy import RuleInput, Thresholds, apply_policy_many
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.resources import DeltaResource, FilesResource, ModelStoreResource

pytestmark = pytest.mark.integration

FEATURES = ["amount", "user_txn_count_24h", "channel"]
CATEGORICAL = ["channel"]
THRESHOLDS = {"review": 0.5, "decline": 0.8}
TODAY = datetime.now(UTC).date()
NORMAL, SHIFTED, QUIET = (TODAY - timedelta(days=d) for d in (20, 19, 18))
ASSETS = [
    daily_served_profile,
    daily_feature_drift,
    daily_prediction_drift,
    shadow_scores,
    daily_realized_performance,
]


def traffic(n: int, seed: int, amount_scale: float = 1.0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(3.5, 0.8, n) * amount_scale
    count = rng.poisson(3.0, n).astype(float)
    channel = rng.choice(["ecommerce", "card_present"], n)
    logit = -6.0 + 0.9 * np.log(amount) + 0.4 * count - 1.5 * (channel == "card_present")
    return pl.DataFrame(
        {
            "amount": amount,
            "user_txn_count_24h": count,
            "channel": channel.tolist(),
            "is_fraud": rng.uniform(size=n) < 1 / (1 + np.exp(-logit)),
        }
    )


def train(frame: pl.DataFrame, seed: int):
    from catboost import CatBoostClassifier

    model = CatBoostClassifier(iterations=60, depth=3, random_seed=seed, verbose=False)
    model.fit(
        frame.select(FEATURES).to_pandas(),
        frame["is_fraud"].to_numpy(),
        cat_features=CATEGORICAL,
    )
    return model


def scored(model, frame: pl.DataFrame) -> pl.DataFrame:
    from fraud_platform.lib.model.input import predict_proba

    scores = predict_proba(model, frame.select(FEATURES))
    rows = frame.to_dicts()
    verdicts = apply_policy_many(
        scores, [RuleInput(txn=r, row=r) for r in rows], Thresholds.of(THRESHOLDS)
    )
    return frame.with_columns(
        pl.Series("score", scores), pl.Series("decision", [v.decision for v in verdicts])
    )


def bronze_scores(day: date, frame: pl.DataFrame, tag: str, offset: int) -> pa.Table:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows = []
    for i, r in enumerate(frame.iter_rows(named=True)):
        at = start + timedelta(seconds=30 * i + 1)
        tid = f"t-{day.isoformat()}-{i:05d}"
        rows.append(
            {
                "schema_version": 1,
                "request_id": f"r-{tid}",
                "scored_at": at,
                "transaction_id": tid,
                "event_time": at,
                "user_id": f"u{i % 50}",
                "card_id": f"c{i % 70}",
                "merchant_id": "m1",
                "merchant_category": "grocery",
                "amount": r["amount"],
                "currency": "EUR",
                "channel": r["channel"],
                "counterparty_id": None,
                "device_id": "d1",
                "ip": "10.0.0.1",
                "country": "DE",
                "score": r["score"],
                "decision": r["decision"],
                "model_version": tag,
                "feature_service": "fraud_scoring_v1",
                "degraded": False,
                "degraded_reason": None,
                "features": json.dumps({f: r[f] for f in FEATURES}),
                "feature_age_s": "{}",
                "reasons": "[]",
                "_topic": SCORES,
                "_partition": 0,
                "_offset": offset + i,
                "_ingested_at": at,
                "_event_date": day,
            }
        )
    return pa.Table.from_pylist(rows, schema=bronze_schema(SCORES))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("daily_monitoring")
    delta = DeltaStore(str(root / "delta"))
    training = traffic(6000, seed=1).with_columns(
        pl.Series(
            "event_time",
            [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(6000)],
            dtype=pl.Datetime("us", "UTC"),
        ),
        pl.Series("transaction_id", [f"train{i}" for i in range(6000)]),
    )
    delta.overwrite(names.TRAINING_SET_TABLE, training)
    validation = ("2026-01-15T00:00:00+00:00", "2026-01-21T00:00:00+00:00")
    champion_model, challenger_model = train(training, 1), train(training.tail(3000), 2)
    resources = {
        "delta": DeltaResource(root=str(root / "delta")),
        "files": FilesResource(root=str(root)),
    }
    store = ModelStoreResource(home=str(root / "bentoml"), delta=delta)
    metadata = {
        "features": FEATURES,
        "categorical_features": CATEGORICAL,
        "thresholds": THRESHOLDS,
        "metrics": {"average_precision": 0.5},
        "split": {"validation_start": validation[0], "validation_end": validation[1]},
        "training_set_table": names.TRAINING_SET_TABLE,
        "training_set_delta_version": 0,
    }
    champion = store.save_catboost(names.MODEL_NAME, champion_model, metadata=metadata, labels={})
    challenger = store.save_catboost(
        names.MODEL_NAME, challenger_model, metadata=metadata, labels={}
    )
    # newest, but a refit's held-out twin: never the challenger in shadow
    store.save_catboost(
        names.MODEL_NAME, champion_model, metadata=metadata, labels={"stage": names.HELDOUT_STAGE}
    )
    store.promote(champion)
    resources["model_store"] = ModelStoreResource(
        home=str(root / "bentoml"), delta=resources["delta"]
    )
    write_profile(
        profile_frame(training, FEATURES), Path(resources["files"].path(*TRAINING_PROFILE_FILE))
    )

    days = {
        NORMAL: scored(champion_model, traffic(800, seed=11)),
        SHIFTED: scored(champion_model, traffic(800, seed=12, amount_scale=6.0)),
        QUIET: scored(champion_model, traffic(40, seed=13)),
    }
    offset = 0
    for day, frame in days.items():
        write_deltalake(
            delta.uri(names.SCORES_TABLE),
            bronze_scores(day, frame, champion, offset),
            mode="append",
            partition_by=["_event_date"],
        )
        offset += frame.height
    # labels of the normal day: every true fraud two days later, a few legit reviews
    normal = days[NORMAL].with_row_index()
    label_rows = [
        {
            "transaction_id": f"t-{NORMAL.isoformat()}-{r['index']:05d}",
            "label_time": datetime(NORMAL.year, NORMAL.month, NORMAL.day, tzinfo=UTC)
            + timedelta(days=2),
            "is_fraud": r["is_fraud"],
            "_event_date": NORMAL + timedelta(days=2),
        }
        for r in normal.iter_rows(named=True)
        if r["is_fraud"] or r["index"] % 10 == 0
    ]
    write_deltalake(
        delta.uri(names.BRONZE_TABLES[LABELS]),
        pa.Table.from_pylist(label_rows),
        partition_by=["_event_date"],
    )
    results = {}
    with dg.instance_for_test() as instance:
        for day in days:
            results[day] = dg.materialize(
                ASSETS, partition_key=day.isoformat(), resources=resources, instance=instance
            )
    return {
        "days": days,
        "results": results,
        "delta": delta,
        "champion": champion,
        "challenger": challenger,
    }


def materialization(result: dg.ExecuteInProcessResult, asset) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == asset.key]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks(result: dg.ExecuteInProcessResult) -> dict[str, tuple[bool, str, dict]]:
    return {
        e.check_name: (
            e.passed,
            e.severity.value,
            {k: v.value for k, v in e.metadata.items()},
        )
        for e in result.get_asset_check_evaluations()
    }


def test_each_partition_reads_only_its_day(world: dict) -> None:
    for day, frame in world["days"].items():
        meta = materialization(world["results"][day], daily_served_profile)
        assert meta["dagster/row_count"] == frame.height
        assert meta["decision_dates_read"] == [day.isoformat()]


def test_feature_drift_flags_the_shifted_day_only(world: dict) -> None:
    normal = checks(world["results"][NORMAL])["daily_features_have_not_drifted"]
    shifted = checks(world["results"][SHIFTED])["daily_features_have_not_drifted"]
    quiet = checks(world["results"][QUIET])["daily_features_have_not_drifted"]
    assert normal[0] and normal[2]["status"] == "PASS", normal[2]["summary"]
    assert "amount" in shifted[2]["drifted_columns"]
    assert not shifted[0] and shifted[2]["status"] in ("WARN", "FAIL")
    assert shifted[1] == ("WARN" if shifted[2]["status"] == "WARN" else "ERROR")
    assert quiet[0] and quiet[2]["status"] == "NOT_JUDGED" and quiet[2]["value"] is None
    history = world["delta"].read(names.DAILY_FEATURE_DRIFT_TABLE)
    assert history.height == 3  # one row per day, however often a day is computed


def test_prediction_drift_flags_the_shifted_scores(world: dict) -> None:
    normal = checks(world["results"][NORMAL])["daily_scores_have_not_drifted"]
    shifted = checks(world["results"][SHIFTED])["daily_scores_have_not_drifted"]
    assert normal[0] and normal[2]["status"] == "PASS", normal[2]["summary"]
    assert not shifted[0] and shifted[2]["status"] == "FAIL", shifted[2]["summary"]
    assert shifted[2]["value"] > shifted[2]["threshold"] == 0.25
    rates = checks(world["results"][SHIFTED])["daily_decision_rates_are_stable"]
    assert (
        rates[2]["decision_rates"]["current_shares"]["approve"]
        < (rates[2]["decision_rates"]["reference_shares"]["approve"])
    )
    assert rates[0] == (rates[2]["status"] == "PASS")


def test_shadow_scores_are_the_challengers(world: dict) -> None:
    meta = materialization(world["results"][NORMAL], shadow_scores)
    assert meta["challenger"] == world["challenger"] != world["champion"]
    assert meta["dagster/row_count"] == world["days"][NORMAL].height
    assert meta["features_missing_from_log"] == []
    rows = world["delta"].read(names.SHADOW_SCORES_TABLE)
    assert rows.height == sum(f.height for f in world["days"].values())
    assert set(rows["model_tag"].to_list()) == {world["challenger"]}


def test_realized_performance_against_the_labels_written(world: dict) -> None:
    frame = world["days"][NORMAL]
    frauds = frame.filter(pl.col("is_fraud"))
    meta = materialization(world["results"][NORMAL], daily_realized_performance)
    served = meta["performance"]["served"]
    assert served["rows"] == frame.height
    assert served["fraud_labels"] == frauds.height
    assert served["money_lost"] == pytest.approx(
        frauds.filter(pl.col("decision") == "approve")["amount"].sum()
    )
    assert served["frauds_caught"] == frauds.filter(pl.col("decision") != "approve").height
    assert meta["label_coverage"] == 1.0 and meta["labels_matured"]
    assert set(meta["performance"]) == {"served", "shadow"}
    check = checks(world["results"][NORMAL])["realized_ap_holds_up"]
    assert check[2]["value"] == pytest.approx(served["average_precision"])
    assert check[2]["threshold"] == pytest.approx(0.5 - 0.1)
    assert check[0] == (check[2]["status"] in ("PASS", "NOT_JUDGED"))
    # the shifted day has no labels yet: not judged, and the metadata says why
    later = checks(world["results"][SHIFTED])["realized_ap_holds_up"]
    assert later[0] and later[2]["status"] == "NOT_JUDGED"
    assert "0 known frauds" in later[2]["summary"]
