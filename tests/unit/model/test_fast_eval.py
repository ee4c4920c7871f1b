"""Unit tests of fraud_platform.lib.model.fast_eval: scores and approximate SHAP reasons from
the trees' leaves equal CatBoost's own (``predict_proba``, ``top_reasons``)."""

from __future__ import annotations

import polars as pl

from fraud_platform.lib.model.explain import top_reasons
from fraud_platform.lib.model.fast_eval import LeafEvaluator, probe_rows
from fraud_platform.lib.model.input import OneRowPredictor, predict_proba


def _online(row: dict) -> dict:
    return {k: (None if v != v else v) for k, v in row.items()}  # NaN -> null, as served


def test_one_row_scores_and_reasons_come_from_the_leaves_and_equal_catboost(
    frame: pl.DataFrame, trained
) -> None:
    predictor = OneRowPredictor(trained)
    rows = [_online(row) for row in frame.head(200).iter_rows(named=True)]
    for row in rows:
        score, explained = predictor.predict(row)
        assert explained is not None  # the leaf path, not CatBoost's predict
        assert score == predict_proba(trained, row, allow_missing=True)[0]
        contributions, values, features = predictor.contributions(explained)
        expected = top_reasons(trained, row, k=3, allow_missing=True, shap_calc_type="Approximate")
        got = sorted(zip(features, contributions.tolist(), strict=True), key=lambda p: -p[1])[
            : len(expected)
        ]
        assert [name for name, _ in got] == [r["feature"] for r in expected]
        for (_, value), reason in zip(got, expected, strict=True):
            assert abs(value - reason["contribution"]) < 1e-9


def test_a_disagreeing_evaluator_is_not_used(trained) -> None:
    model = trained.model
    cats = list(model.get_cat_feature_indices())
    is_cat = [i in cats for i in range(len(model.feature_names_))]
    probes = probe_rows(model, is_cat)
    assert LeafEvaluator.build(model, probes, cats) is not None
    evaluator = LeafEvaluator.build(model, probes, cats)
    evaluator._values = evaluator._values * 1.0000001  # a wrong leaf value somewhere
    assert not evaluator._agrees(probes, cats)
    assert LeafEvaluator.build(model, [], cats) is None  # nothing checked: not used
