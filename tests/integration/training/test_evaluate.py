"""``fraud-platform evaluate`` on a small simulation run through the real ingestion (embedded
broker), dbt and the offline feature tables: train until a cutoff, test on a later window."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from typer.testing import CliRunner

from fraud_platform.defs.features.assets import history_partition_range
from fraud_platform.defs.training.assets import SERVICE
from fraud_platform.lib.simulation import SimulationConfig, publish, simulate
from fraud_platform.lib.storage.delta import DeltaStore
from fraud_platform.lib.training import protocol
from fraud_platform.resources import WarehouseResource
from fraud_platform.settings import Settings
from fraud_platform.tools.brokers import BrokerSpec, start_broker, stop_broker
from fraud_platform.tools.cli import app
from fraud_platform.tools.cli_evaluate import _silver_and_features
from fraud_platform.tools.pipeline import load_definitions, prepare_dbt_manifest, run_layers
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration
DAYS = 18
CUTOFF_DAY, TEST_START_DAY, TEST_END_DAY = 12, 13, 17
MATURITY_DAYS = 3.0
SMALL_MODEL = {
    "iterations": 120,
    "test_days": 2.0,
    "validation_days": 2.0,
    "gap_days": 0.5,
    "min_auc_roc": 0.0,
    "min_average_precision": 0.0,
}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Ingested, transformed and featurised history (no online store: nothing here reads it)."""
    data_dir = tmp_path_factory.mktemp("evaluate")
    spec = BrokerSpec("noida", free_port(), data_dir / "noida")
    start_broker(spec)
    patch = pytest.MonkeyPatch()
    for key, value in {
        "FRAUD_PLATFORM_DATA_DIR": str(data_dir),
        "KAFKA_BOOTSTRAP_SERVERS": spec.bootstrap,
        "DAGSTER_HOME": str(data_dir / "dagster_home"),
    }.items():
        patch.setenv(key, value)
    try:
        from fraud_platform.lib.kafka.admin import ensure_topics
        from fraud_platform.tools.instance import prepare_dagster_home

        settings = Settings.from_env()
        prepare_dagster_home(settings)
        prepare_dbt_manifest()
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
            days=DAYS
        )
        simulation = simulate(SimulationConfig(days=DAYS, users=800, seed=11, start=start))
        ensure_topics(spec.bootstrap, ["transactions", "account_events", "labels"])
        publish(simulation, spec.bootstrap, until=start + timedelta(days=DAYS))
        instance = dg.DagsterInstance.get()
        defs = load_definitions()
        run_layers(
            instance,
            ["ingestion", "transform"],
            defs=defs,
            on_progress=lambda _: None,
            log_dir=data_dir / "logs",
        )
        bounds = history_partition_range(WarehouseResource(path=str(settings.warehouse_path)))
        assert bounds is not None
        result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["features", g.versioned_name]) for g in SERVICE.groups],
            tags={
                "dagster/asset_partition_range_start": bounds[0],
                "dagster/asset_partition_range_end": bounds[1],
            },
        )
        assert result.success
        yield {"settings": settings, "simulation": simulation, "start": start, "data_dir": data_dir}
    finally:
        patch.undo()
        stop_broker(spec)


def _day(history: dict, day: int) -> datetime:
    return history["start"] + timedelta(days=day)


def _window_truth(history: dict) -> pl.DataFrame:
    """Ground-truth labels of the window's transactions, from the simulator (not the platform)."""
    a, b = _day(history, TEST_START_DAY), _day(history, TEST_END_DAY)
    fraud = history["simulation"].fraud_type_by_transaction
    ids = [
        t["transaction_id"] for t in history["simulation"].transactions if a <= t["event_time"] < b
    ]
    return pl.DataFrame({"transaction_id": ids, "is_fraud": [i in fraud for i in ids]})


def _known_compromised_transactions(history: dict) -> set[str]:
    """Window transactions of cards with a fraud label published before the window."""
    a, b = _day(history, TEST_START_DAY), _day(history, TEST_END_DAY)
    simulation = history["simulation"]
    card_of = {t["transaction_id"]: t["card_id"] for t in simulation.transactions}
    known = {
        card_of[lab["transaction_id"]]
        for lab in simulation.labels
        if lab["is_fraud"] and lab["label_time"] < a
    }
    return {
        t["transaction_id"]
        for t in simulation.transactions
        if a <= t["event_time"] < b and t["card_id"] in known
    }


@pytest.fixture(scope="module")
def run(history: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The protocol through the library: the training frame is inspected too."""
    from fraud_platform.defs.training.assets import ModelConfig

    labels_path = tmp_path_factory.mktemp("labels") / "window_labels.csv"
    _window_truth(history).write_csv(labels_path)
    from fraud_platform.lib.training.window import read_label_file

    transactions, labels, group_rows, service = _silver_and_features(history["settings"])
    config = protocol.ProtocolConfig(
        train_until=_day(history, CUTOFF_DAY),
        test_start=_day(history, TEST_START_DAY),
        test_end=_day(history, TEST_END_DAY),
        maturity=timedelta(days=MATURITY_DAYS),
        exclude_known_compromised=True,
        card_k=20,
        pipeline=ModelConfig(**SMALL_MODEL).pipeline_config(),
    )
    result = protocol.run_protocol(
        transactions, labels, group_rows, service, config, file_labels=read_label_file(labels_path)
    )
    return {"result": result, "transactions": transactions, "labels_path": labels_path}


def test_evaluate_trains_on_nothing_from_the_window(history: dict, run: dict) -> None:
    frame = run["result"].training_frame
    cutoff = _day(history, CUTOFF_DAY)
    assert frame["event_time"].max() < cutoff - timedelta(days=MATURITY_DAYS) + timedelta(seconds=1)
    window_ids = set(_window_truth(history)["transaction_id"])
    assert not window_ids & set(frame["transaction_id"])
    assert run["result"].report["training_set"]["last_event_time"] < cutoff.isoformat()


def test_evaluate_excludes_known_compromised_cards_and_uses_the_label_file(
    history: dict, run: dict
) -> None:
    report = run["result"].report
    truth = _window_truth(history)
    excluded = _known_compromised_transactions(history)
    assert excluded, "the simulation should have cards known compromised before the window"
    assert report["window"]["known_compromised"]["transactions"] == len(excluded)
    kept = truth.filter(~pl.col("transaction_id").is_in(list(excluded)))
    assert report["window"]["transactions"] == truth.height
    assert report["window"]["labels"]["from_file"] == kept.height
    assert report["window"]["labels"]["unknown_excluded"] == 0
    assert report["window"]["labels"]["file_labels_unmatched"] == 0  # it names only the window
    assert report["window"]["scored"] == kept.height
    assert report["window"]["positives"] == int(kept["is_fraud"].sum())
    scored = run["result"].scored
    assert not set(scored["transaction_id"]) & excluded


def test_evaluate_report_has_the_metrics_and_card_precision_per_day(run: dict) -> None:
    report = run["result"].report
    metrics = report["metrics"]
    for key in ("auc_roc", "average_precision", "precision_at_budget", "recall_at_budget"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["auc_roc"] > 0.6  # the simulated fraud is learnable
    assert sum(metrics["policy"]["decisions"].values()) == report["window"]["scored"]
    card = report["card_precision"]
    assert card["k"] == 20
    assert [d["day"] for d in card["days"]] == sorted({d["day"] for d in card["days"]})
    assert len(card["days"]) == TEST_END_DAY - TEST_START_DAY
    assert all(0.0 <= d["card_precision"] <= 1.0 and d["reviewed"] <= 20 for d in card["days"])
    assert set(report["plots"]) == {
        "pr_curve",
        "roc_curve",
        "score_distribution",
        "card_precision_per_day",
    }


def test_evaluate_cli_writes_the_report_and_plots(history: dict, run: dict, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = [
        "evaluate",
        "--train-until", _day(history, CUTOFF_DAY).isoformat(),
        "--test-start", _day(history, TEST_START_DAY).isoformat(),
        "--test-end", _day(history, TEST_END_DAY).isoformat(),
        "--maturity-days", str(MATURITY_DAYS),
        "--labels", str(run["labels_path"]),
        "--exclude-known-compromised",
        "--refit",
        "--k", "20",
        "--model-config", json.dumps(SMALL_MODEL),
        "--out", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "card precision@20: mean" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["refit"] is True
    assert report["model"]["refit"] is True
    assert report["window"] == run["result"].report["window"]  # same window, same labels
    for name in report["plots"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pl.read_parquet(out / "scores.parquet").height == report["window"]["scored"]


def test_evaluate_cli_refuses_a_window_before_the_cutoff(history: dict) -> None:
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--train-until", _day(history, TEST_START_DAY).isoformat(),
            "--test-start", _day(history, CUTOFF_DAY).isoformat(),
            "--test-end", _day(history, TEST_END_DAY).isoformat(),
        ],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "before the training cutoff" in result.output


def test_backtest_rows_take_window_labels_from_a_file(history: dict, run: dict) -> None:
    """An external period whose labels have not arrived: without the file its young rows have
    no label (the backtest printed n/a); with it every row is labelled and measured."""
    from fraud_platform.defs.serving.assets import backtest_rows
    from fraud_platform.lib.training import backtest as backtesting
    from fraud_platform.lib.training.window import read_label_file

    settings = history["settings"]
    delta = DeltaStore(settings.delta_uri)
    warehouse = WarehouseResource(path=str(settings.warehouse_path))
    a, b = _day(history, TEST_START_DAY), _day(history, TEST_END_DAY)
    late = _day(history, 16)  # the window's last day: hardly any label has arrived for it
    without, _, _ = backtest_rows("silver", late, b, 1, delta, warehouse)
    assert without["is_fraud"].null_count() > 0.9 * without.height
    rows, _, _ = backtest_rows(
        "silver", a, b, 4, delta, warehouse, read_label_file(run["labels_path"])
    )
    assert rows["is_fraud"].null_count() == 0
    measured = backtesting.backtest({"m": run["result"].model}, rows, a, b)
    assert measured.models["m"].labelled == rows.height
    assert measured.models["m"].average_precision is not None
