"""Unit tests of fraud_platform.lib.model.leaf_index: the leaf indexes computed without a Pool
equal CatBoost's ``calc_leaf_indexes`` on every row, NaN, infinities and exact borders
included, for both ways a model treats a missing value."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from catboost import CatBoostClassifier, Pool

from fraud_platform.lib.model.input import OneRowPredictor, _rows_from_dicts, predict_proba
from fraud_platform.lib.model.leaf_index import LeafIndexer


def _info(model: Any, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "model.json"
    model.save_model(str(path), format="json")
    return json.loads(path.read_text())


def _edge_rows(model: Any, rows: list[list[Any]], is_cat: list[bool]) -> list[list[Any]]:
    """Each row again with one float feature at a border, a hair either side of it (float64
    values that round to the float32 border or past it), NaN or an infinity."""
    borders = model.get_borders()
    float_columns = [i for i, cat in enumerate(is_cat) if not cat]
    out = []
    for n, row in enumerate(rows):
        f = n % len(float_columns)
        found = borders.get(f, []) or [0.0]
        border = found[n % len(found)]
        for value in (
            border,
            float(np.nextafter(border, math.inf)),
            float(np.nextafter(border, -math.inf)),
            float(np.nextafter(np.float32(border), np.float32(math.inf))),
            math.nan,
            math.inf,
            -math.inf,
        ):
            edited = list(row)
            edited[float_columns[f]] = value
            out.append(edited)
    return out


def _check(model: Any, rows: list[list[Any]], cat_indices: list[int], info: dict) -> int:
    """Every row's leaves from the indexer (learning unknown combinations from CatBoost) equal
    CatBoost's; returns how many rows came from what was learned for other rows."""
    indexer = LeafIndexer.of(info)
    assert indexer is not None
    expected = model.calc_leaf_indexes(Pool(rows, cat_features=cat_indices, thread_count=1))
    reused = 0
    for row, leaves in zip(rows, expected, strict=True):
        got = indexer.leaves(row)
        if got is None:
            indexer.learn(row, leaves)
            assert indexer.usable  # the float part agreed with CatBoost's
            got = indexer.leaves(row)
        else:
            reused += 1
        assert np.array_equal(got, leaves)
    return reused


def test_leaf_indexes_equal_catboost_on_edge_rows(trained, frame: pl.DataFrame, tmp_path) -> None:
    model = trained.model
    cat_indices = list(model.get_cat_feature_indices())
    is_cat = [i in cat_indices for i in range(len(model.feature_names_))]
    records = [
        {k: (None if v != v else v) for k, v in row.items()}
        for row in frame.head(300).iter_rows(named=True)
    ]
    rows = _rows_from_dicts(records, list(model.feature_names_), is_cat, allow_missing=True)
    rows += _edge_rows(model, rows[:150], is_cat)
    assert _check(model, rows, cat_indices, _info(model, tmp_path)) > len(rows) // 2


@pytest.mark.parametrize("nan_mode", ["Min", "Max"])
def test_leaf_indexes_follow_the_models_nan_mode(nan_mode: str, tmp_path) -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    x = rng.normal(size=(n, 3))
    x[rng.random((n, 3)) < 0.2] = math.nan
    cats = rng.choice(["a", "b", "c", "d"], size=n)
    label = ((np.nan_to_num(x[:, 0], nan=2.0) + (cats == "b")) > 0.8).astype(int)
    rows = [[*map(float, x[i]), str(cats[i])] for i in range(n)]
    model = CatBoostClassifier(
        iterations=30, depth=4, nan_mode=nan_mode, verbose=0, allow_writing_files=False
    )
    model.fit(Pool(rows, label=label, cat_features=[3]))
    info = _info(model, tmp_path)
    treatments = {f["nan_value_treatment"] for f in info["features_info"]["float_features"]}
    assert treatments == {"AsFalse" if nan_mode == "Min" else "AsTrue"}
    _check(model, rows[:400] + _edge_rows(model, rows[:50], [False] * 3 + [True]), [3], info)


def test_a_wrong_float_part_stops_the_indexer(trained, frame: pl.DataFrame, tmp_path) -> None:
    model = trained.model
    cat_indices = list(model.get_cat_feature_indices())
    is_cat = [i in cat_indices for i in range(len(model.feature_names_))]
    indexer = LeafIndexer.of(_info(model, tmp_path))
    assert indexer is not None
    indexer._borders = indexer._borders - np.float32(1e6)  # every float split passes
    row = _rows_from_dicts(frame.head(1).to_dicts(), list(model.feature_names_), is_cat, True)
    indexer.learn(row[0], model.calc_leaf_indexes(Pool(row, cat_features=cat_indices))[0])
    assert not indexer.usable and indexer.leaves(row[0]) is None


def test_one_row_predictor_uses_the_indexer_and_equals_batch(trained, frame) -> None:
    predictor = OneRowPredictor(trained)
    records = [
        {k: (None if v != v else v) for k, v in row.items()}
        for row in frame.head(100).iter_rows(named=True)
    ]
    for _ in range(2):  # the second pass reads every combination from the indexer
        for record in records:
            assert predictor(record) == predict_proba(trained, record, allow_missing=True)[0]
    assert predictor._leaf.indexer is not None and predictor._leaf.indexer.usable


def test_an_evaluator_drops_an_indexer_that_disagrees(trained, monkeypatch) -> None:
    from fraud_platform.lib.model.fast_eval import LeafEvaluator, probe_rows

    model = trained.model
    cats = list(model.get_cat_feature_indices())
    probes = probe_rows(model, [i in cats for i in range(len(model.feature_names_))])
    assert LeafEvaluator.build(model, probes, cats).indexer is not None
    wrong = LeafIndexer._codes
    monkeypatch.setattr(LeafIndexer, "_codes", lambda self, values: wrong(self, values) + 1)
    evaluator = LeafEvaluator.build(model, probes, cats)
    assert evaluator is not None and evaluator.indexer is None  # CatBoost's leaves, then
