"""A team's own thin history: write it, import it, train with a cutoff, compare the models.

    .venv/bin/python benchmarks/own_data.py [--quick]

1. Writes a thin data set (the simulator's ``thin`` profile: card, terminal, amount, time; a
   terminal-compromise and a card-compromise scenario; fraud labels 7 days later) as Parquet in
   contract column names: ``transactions.parquet`` (only the thin fields) and
   ``labels.parquet``. Full: 3,000 cards x 180 days (~1.08M transactions); quick: 500 cards x
   70 days.
2. Imports it with ``fraud-platform import transactions|labels PATH`` (into bronze), one
   process per file.
3. Trains with a cutoff and evaluates on a later window, in process on the same rows (the
   platform's ``fraud-platform evaluate`` runs the same protocol over the stored tables): the
   feature groups of ``fraud_scoring_thin_v1`` computed from the Parquet data, the
   training set as known at ``train_until`` (labels with ``label_time <= train_until``, 7-day
   maturity), ``pipeline.train_and_evaluate`` (CatBoost, logistic regression and random forest
   on one split; the best by validation AP chosen), then every candidate scored on the test
   window ``[train_until + gap, end)`` with all labels (the ground truth), point-in-time
   features.

Figures: import events/s, AP of each candidate on the test window, the chosen kind, card
precision@k (the mean over the window's days of the share of fraudulent cards among the day's
top-k cards by their highest score, cards already caught on earlier days left out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
from _common import REPO_ROOT, emit

from fraud_platform.lib.features.catalog import MERCHANT_FRAUD_LABELS, TXN
from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.services import FRAUD_SCORING_THIN_V1 as SERVICE
from fraud_platform.lib.features.training_frame import build_training_frame, label_transactions
from fraud_platform.lib.model.input import predict_proba
from fraud_platform.lib.simulation.thin import (
    THIN_TRANSACTION_FIELDS,
    ThinConfig,
    ThinSimulation,
    simulate_thin,
)
from fraud_platform.lib.training.baselines import BaselineConfig
from fraud_platform.lib.training.card_precision import card_precision_at_k
from fraud_platform.lib.training.fit import TrainConfig
from fraud_platform.lib.training.metrics import average_precision
from fraud_platform.lib.training.pipeline import PipelineConfig, train_and_evaluate

MATURITY = timedelta(days=7)


def write_parquet(simulation: ThinSimulation, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    transactions, labels = folder / "transactions.parquet", folder / "labels.parquet"
    simulation.transactions.select(THIN_TRANSACTION_FIELDS).write_parquet(transactions)
    simulation.labels.write_parquet(labels)
    return transactions, labels


def import_with_cli(transactions: Path, labels: Path, data_dir: Path) -> dict[str, Any]:
    """``fraud-platform import`` of both files, one process each. ``import_s``: the import's
    own time as the command reports it (hash, read, validate, write, commit); ``wall_s`` adds
    the two processes' start (Python imports: ~1.5-3 s each here, whatever the data's size)."""
    env = {**os.environ, "FRAUD_PLATFORM_DATA_DIR": str(data_dir)}
    started = time.perf_counter()
    import_s = 0.0
    for kind, path in (("transactions", transactions), ("labels", labels)):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "fraud-platform"), "import", kind, str(path)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"import {kind} failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
        import_s += json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return {
        "import_path": "fraud-platform import",
        "import_s": import_s,
        "wall_s": time.perf_counter() - started,
    }


def feature_rows(transactions: pl.DataFrame, labels: pl.DataFrame) -> dict[str, pl.DataFrame]:
    """Every group of the thin service from the imported rows (the silver tables' content)."""
    merchant_labels = (
        labels.filter(pl.col("is_fraud"))
        .join(
            transactions.select("transaction_id", "merchant_id", "event_time"), on="transaction_id"
        )
        .rename({"event_time": "transaction_time"})
    )
    sources = {TXN: transactions, MERCHANT_FRAUD_LABELS: merchant_labels}
    return {g.versioned_name: compute_feature_group(g, sources[g.source]) for g in SERVICE.groups}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    config = (
        ThinConfig(days=70, cards=500, terminals=400, seed=11)
        if args.quick
        else ThinConfig(days=180, cards=3000, terminals=2000, seed=11)
    )
    test_days, k = (10, 20) if args.quick else (21, 100)
    lines: list[str] = []
    started = time.perf_counter()
    simulation = simulate_thin(config)
    events = simulation.transactions.height + simulation.labels.height
    lines.append(
        f"thin data set: {simulation.transactions.height:,} transactions, "
        f"{simulation.labels.height:,} fraud labels over {config.days} days "
        f"({time.perf_counter() - started:.1f} s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench_own_data_") as folder:
        tmp = Path(folder)
        transactions_path, labels_path = write_parquet(simulation, tmp / "data")
        imported = import_with_cli(transactions_path, labels_path, tmp / "platform")
        transactions = pl.read_parquet(transactions_path)
        labels = pl.read_parquet(labels_path)
    # the contract defaults of the fields thin data lacks (request features read two of them)
    transactions = transactions.with_columns(
        pl.lit("card_present").alias("channel"), pl.lit("unknown").alias("merchant_category")
    )
    end = config.start + timedelta(days=config.days)
    test_start = end - timedelta(days=test_days)
    train_until = test_start - timedelta(days=1)

    started = time.perf_counter()
    groups = feature_rows(transactions, labels)
    known = label_transactions(
        transactions.filter(pl.col("event_time") < train_until),
        labels,
        as_of=train_until,
        maturity=MATURITY,
    )
    frame = build_training_frame(known.frame, groups, SERVICE)
    features_s = time.perf_counter() - started
    lines.append(f"features + training set: {frame.height:,} rows in {features_s:.1f} s")

    pipeline_config = PipelineConfig(
        train=TrainConfig(iterations=200 if args.quick else 400),
        min_auc_roc=0.5,
        baselines=(
            BaselineConfig(forest_trees=40, forest_max_samples=20_000)
            if args.quick
            else BaselineConfig()
        ),
    )
    started = time.perf_counter()
    result = train_and_evaluate(
        frame, SERVICE.numeric_features, list(SERVICE.categorical_features), pipeline_config
    )
    train_s = time.perf_counter() - started
    lines.append(f"candidates trained in {train_s:.1f} s; {result.selection_reason}")
    lines.append(result.candidates_markdown())

    everything = label_transactions(
        transactions, labels, as_of=end + timedelta(days=60), maturity=timedelta(0)
    ).frame.filter(pl.col("event_time") >= test_start)
    test = build_training_frame(everything, groups, SERVICE).join(
        everything.select("transaction_id", "card_id"), on="transaction_id"
    )
    y = test["is_fraud"].to_numpy()
    ap = {kind: average_precision(y, predict_proba(m, test)) for kind, m in result.models.items()}
    chosen_scores = predict_proba(result.models[result.chosen], test)
    by_type = {
        kind: round(float(test.filter(pl.col("fraud_type") == kind).height), 0)
        for kind in ("compromised_merchant", "stolen_card")
    }
    results: dict[str, Any] = {
        "quick": args.quick,
        "events": events,
        "transactions": simulation.transactions.height,
        "import_path": imported["import_path"],
        "import_events_per_s": round(events / imported["import_s"]),
        "import_wall_events_per_s": round(events / imported["wall_s"]),
        "train_rows": frame.height,
        "test_rows": test.height,
        "test_frauds": int(y.sum()),
        "test_frauds_by_type": by_type,
        "ap_catboost": round(ap["catboost"], 4),
        "ap_logreg": round(ap["logreg"], 4),
        "ap_forest": round(ap["forest"], 4),
        "validation_ap": {
            kind: round(row["validation_average_precision"], 4)
            for kind, row in result.candidates.items()
        },
        "chosen": result.chosen,
        "chosen_ap_ge_every_baseline": bool(
            ap[result.chosen] >= max(ap["logreg"], ap["forest"]) - 1e-12
        ),
        "k": k,
        "cp_at_k": round(
            card_precision_at_k(
                test["card_id"], test["event_time"], test["is_fraud"], chosen_scores, k
            ).mean,
            4,
        ),
        "import_s": round(imported["import_s"], 2),
        "import_wall_s": round(imported["wall_s"], 2),
        "features_s": round(features_s, 1),
        "train_s": round(train_s, 1),
    }
    emit(results, lines)


if __name__ == "__main__":
    main()
