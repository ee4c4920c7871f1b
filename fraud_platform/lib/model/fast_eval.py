"""One-row CatBoost scores and approximate SHAP reasons from the model's leaf indexes.

CatBoost's ``predict`` on a one-row ``Pool`` spends ~90% of its time in fixed per-call work,
and ``get_feature_importance(type="ShapValues", shap_calc_type="Approximate")`` re-derives
every tree's node values on every call (~4-5 ms on a 400-tree model, for one row).
``LeafEvaluator`` reads the oblivious trees once (the model's JSON export) and per row asks
CatBoost only for the leaf each tree sends the row to (``calc_leaf_indexes``); from those:

* the score: the leaf values summed tree by tree, scaled and biased, through the sigmoid, as
  CatBoost's evaluator does (bit-identical, checked at build time);
* the approximate SHAP values, CatBoost's ``Approximate`` algorithm for oblivious trees: along
  the row's path from the root (the tree's last split) each split's feature gets the change
  of the weighted mean leaf value below the node; a split on a categorical combination (CTR)
  shares it equally among the combination's features.

``LeafEvaluator.build`` returns None (callers keep CatBoost's own calls) unless the model is a
binary CatBoost of oblivious trees and both figures agree with CatBoost's on probe rows.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fraud_platform.lib.model.leaf_index import LeafIndexer

SHAP_TOLERANCE = 1e-9


class LeafEvaluator:
    """Score and SHAP values of one row from ``calc_leaf_indexes``; see the module docstring."""

    __slots__ = (
        "_model",
        "_values",
        "_trees",
        "_scale",
        "_bias",
        "_features",
        "_shap",
        "_offsets",
        "indexer",
    )

    def __init__(self, model: Any, trees: list[dict[str, Any]], info: dict[str, Any]) -> None:
        self._model = model
        scale, biases = info["scale_and_bias"]
        self._scale = float(scale)
        self._bias = float(biases[0] if isinstance(biases, list) else biases)
        width = max(len(tree["leaf_values"]) for tree in trees)
        self._values = np.zeros((len(trees), width))
        for t, tree in enumerate(trees):
            self._values[t, : len(tree["leaf_values"])] = tree["leaf_values"]
        self._trees = np.arange(len(trees))
        # (tree, leaf) -> index tree * width + leaf of the raveled values: one `take`, cheaper
        # than indexing in 2-d
        self._offsets = self._trees * width
        # leaf indexes without a Pool (None: CatBoost's calc_leaf_indexes); checked in `_agrees`
        self.indexer = LeafIndexer.of(info)
        flat_of_split = _split_features(info["features_info"])
        paths = [_leaf_contributions(tree, flat_of_split) for tree in trees]
        # (tree, leaf, k) -> k-th (feature, SHAP value) of the leaf's path; padding credits the
        # extra slot `n_features` with 0
        n_features = 1 + max((f for tree in paths for leaf in tree for f, _ in leaf), default=0)
        pairs = max(len(leaf) for tree in paths for leaf in tree)
        self._features = np.full((len(trees), width, max(pairs, 1)), n_features, dtype=np.intp)
        self._shap = np.zeros((len(trees), width, max(pairs, 1)))
        for t, tree in enumerate(paths):
            for leaf, found in enumerate(tree):
                for k, (feature, value) in enumerate(found):
                    self._features[t, leaf, k] = feature
                    self._shap[t, leaf, k] = value

    @classmethod
    def build(cls, model: Any, probe_rows: Sequence[list[Any]], cat_indices: list[int]) -> Any:
        """A checked evaluator for ``model``, or None when it does not apply or disagrees."""
        try:
            if getattr(model, "_object", None) is None or len(model.classes_) != 2:
                return None
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "model.json"
                model.save_model(str(path), format="json")
                info = json.loads(path.read_text())
            trees = info.get("oblivious_trees")
            if not trees or "leaf_weights" not in trees[0]:
                return None
            evaluator = cls(model, trees, info)
            if not evaluator._agrees(probe_rows, cat_indices):
                return None
            return evaluator
        except Exception:  # noqa: BLE001 - an optimisation: any failure keeps CatBoost's calls
            return None

    def leaves(self, pool: Any) -> np.ndarray:
        """The leaf of each tree for the pool's first row."""
        return self._model.calc_leaf_indexes(pool, thread_count=1)[0]

    def probability(self, leaves: np.ndarray) -> float:
        # cumsum adds tree by tree, as CatBoost does (sum() would add pairwise: other bits)
        raw = float(np.cumsum(self._values.ravel().take(self._offsets + leaves))[-1])
        return 1.0 / (1.0 + math.exp(-(self._scale * raw + self._bias)))

    def contributions(self, leaves: np.ndarray, n_features: int) -> np.ndarray:
        """Approximate SHAP value per feature (the model's order), without the expected value."""
        features = self._features[self._trees, leaves].ravel()
        values = self._shap[self._trees, leaves].ravel()
        summed = np.bincount(features, weights=values, minlength=n_features + 1)
        return summed[:n_features] * self._scale

    def _agrees(self, rows: Sequence[list[Any]], cat_indices: list[int]) -> bool:
        from catboost import Pool

        if not rows:
            return False
        pool = Pool(list(rows), cat_features=cat_indices, thread_count=1)
        expected = self._model.predict(pool, prediction_type="Probability", thread_count=1)[:, 1]
        shap = np.asarray(
            self._model.get_feature_importance(
                pool, type="ShapValues", thread_count=1, shap_calc_type="Approximate"
            )
        )[:, :-1]
        all_leaves = self._model.calc_leaf_indexes(pool, thread_count=1)
        if self.indexer is not None and not _indexer_agrees(self.indexer, rows, all_leaves):
            self.indexer = None
        for i, leaves in enumerate(all_leaves):
            if self.probability(leaves) != float(expected[i]):
                return False
            if not np.allclose(
                self.contributions(leaves, shap.shape[1]), shap[i], rtol=0, atol=SHAP_TOLERANCE
            ):
                return False
        return True


def _indexer_agrees(indexer: LeafIndexer, rows: Sequence[list[Any]], leaves: Any) -> bool:
    """The indexer learns the rows' categorical combinations from CatBoost's leaves, then gives
    every row's leaves itself: all equal to CatBoost's."""
    for row, found in zip(rows, leaves, strict=True):
        if indexer.leaves(row) is None:
            indexer.learn(row, found)
    return all(
        (got := indexer.leaves(row)) is not None and np.array_equal(got, found)
        for row, found in zip(rows, leaves, strict=True)
    )


def _split_features(features_info: dict[str, Any]) -> dict[int, tuple[int, ...]]:
    """Binary feature (CatBoost's ``split_index``) -> the flat features it depends on."""
    floats = features_info.get("float_features", [])
    cats = features_info.get("categorical_features", [])
    flat_cat = {c["feature_index"]: c["flat_feature_index"] for c in cats}
    out: dict[int, tuple[int, ...]] = {}
    index = 0
    for feature in floats:
        for _ in feature["borders"]:
            out[index] = (feature["flat_feature_index"],)
            index += 1
    for cat in cats:
        for _ in cat.get("values", []):  # one-hot encoded categorical features
            out[index] = (cat["flat_feature_index"],)
            index += 1
    for ctr in features_info.get("ctrs", []):
        members: list[int] = []
        for element in ctr["elements"]:
            # CatBoost credits a combination to its categorical features only (a float
            # feature's border in it is not credited); checked against CatBoost in `build`
            if "cat_feature_index" in element:
                members.append(flat_cat[element["cat_feature_index"]])
        for _ in ctr["borders"]:
            out[index] = tuple(dict.fromkeys(members))
            index += 1
    return out


def _leaf_contributions(
    tree: dict[str, Any], flat_of_split: dict[int, tuple[int, ...]]
) -> list[tuple[tuple[int, float], ...]]:
    """For each leaf of one oblivious tree: its path's (flat feature, SHAP value) pairs
    (CatBoost's approximate algorithm: the root is the last split; a node's value is the
    weighted mean of its leaves' values, by training leaf weights)."""
    splits = tree.get("splits") or []  # None in a tree without splits
    depth = len(splits)
    values = [float(v) for v in tree["leaf_values"]]
    weights = [float(w) for w in tree["leaf_weights"]]
    # node values and weights per level: level `depth` are the leaves; node n at level k has
    # children 2n and 2n+1 at level k+1
    level_values = [values]
    level_weights = [weights]
    for _ in range(depth):
        child_values, child_weights = level_values[0], level_weights[0]
        parents_v, parents_w = [], []
        for node in range(len(child_values) // 2):
            w = child_weights[2 * node] + child_weights[2 * node + 1]
            v = 0.0
            if not _fuzzy_zero(w):
                v = (
                    child_values[2 * node] * child_weights[2 * node]
                    + child_values[2 * node + 1] * child_weights[2 * node + 1]
                ) / w
            parents_v.append(v)
            parents_w.append(w)
        level_values.insert(0, parents_v)
        level_weights.insert(0, parents_w)
    leaves = []
    for leaf in range(1 << depth):
        found: dict[int, float] = {}
        node = 0
        for level in range(depth):
            remaining = depth - level - 1
            child = node * 2 + ((leaf >> remaining) & 1)
            change = level_values[level + 1][child] - level_values[level][node]
            members = flat_of_split[splits[remaining]["split_index"]]
            for feature in members:
                found[feature] = found.get(feature, 0.0) + change / len(members)
            node = child
        leaves.append(tuple(found.items()))
    return leaves


def _fuzzy_zero(value: float) -> bool:
    return 1.0 + value == 1.0


PROBE_CATEGORIES = ("a", "b", "card_present", "p2p", "__missing__", "")


def probe_rows(model: Any, is_cat: Sequence[bool], n: int = 64) -> list[list[Any]]:
    """Rows that take many paths through ``model``'s trees: each float feature just below and
    above its split borders, or NaN; categorical values from a small set."""
    borders = model.get_borders()  # float feature index -> borders
    rows = []
    float_index = 0
    columns: list[list[Any]] = []
    for cat in is_cat:
        if cat:
            columns.append([PROBE_CATEGORIES[i % len(PROBE_CATEGORIES)] for i in range(n)])
            continue
        found = borders.get(float_index, []) if isinstance(borders, dict) else []
        candidates = [b + d for b in found for d in (-1e-3, 1e-3)] or [0.0, 1.0]
        columns.append(
            [
                math.nan if i % 11 == 10 else candidates[(i * 7 + float_index) % len(candidates)]
                for i in range(n)
            ]
        )
        float_index += 1
    for i in range(n):
        rows.append([column[i] for column in columns])
    return rows
