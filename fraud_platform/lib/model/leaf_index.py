"""The leaf each oblivious tree sends one row to, without a ``catboost.Pool``.

In the scoring service the one-row ``Pool`` and ``calc_leaf_indexes`` cost ~150 us of the
handler thread's CPU per request (measured in the served worker, 2026-12-06; ~40 us in a hot
loop: the server runs them with cold caches). A tree's leaf index is the sum of ``1 << d`` over
its splits ``d`` that the row passes, and:

* a float split passes when ``float32(value) > border`` (CatBoost casts inputs to float32; a
  NaN compares false, as CatBoost does for ``nan_value_treatment`` ``AsIs`` and ``AsFalse``,
  and counts as +inf for ``AsTrue``): computed here, one numpy comparison for all trees;
* a categorical split (a CTR or one-hot) depends on the row's categorical values and, for a
  CTR that combines them with float borders, on which side of those borders the row is: its
  part of every tree's index is asked of CatBoost once per such combination (``learn``, from
  one ``calc_leaf_indexes``) and cached (up to ``MAX_COMBINATIONS``).

``LeafIndexer.of`` returns None (the caller asks CatBoost) when the model has a split of
another kind or a CTR element it does not know. ``learn`` checks the float part against
CatBoost's on every combination it learns; ``LeafEvaluator`` checks the whole on probe rows
when it is built.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

# distinct combinations of categorical values remembered; past it, CatBoost answers (correct,
# slower) for combinations not seen yet
MAX_COMBINATIONS = 4_096
_NEVER = np.float32(np.inf)  # the border of a padding split: nothing is above it


class LeafIndexer:
    """Leaf indexes of one model-input row (the model's feature order); see the module doc."""

    __slots__ = (
        "_floats",
        "_cats",
        "_as_true",
        "_columns",
        "_borders",
        "_powers",
        "_trees",
        "_cat_mask",
        "_part_type",
        "_combinations",
        "usable",
    )

    def __init__(self, info: dict[str, Any]) -> None:
        features = info["features_info"]
        floats = features.get("float_features", [])
        column_of = {f["feature_index"]: i for i, f in enumerate(floats)}
        flat = [f["flat_feature_index"] for f in floats]
        self._floats = _getter(flat)
        cats = sorted(c["flat_feature_index"] for c in features.get("categorical_features", []))
        self._cats = _getter(cats) if cats else None
        as_true = [f.get("nan_value_treatment") == "AsTrue" for f in floats]
        self._as_true = np.array(as_true) if any(as_true) else None
        trees = [tree.get("splits") or [] for tree in info["oblivious_trees"]]
        depth = max(1, max(len(splits) for splits in trees))
        # the float borders CTR combinations read: which side of each is part of the key
        pairs = sorted(
            {
                (column_of[e["float_feature_index"]], float(np.float32(e["border"])))
                for ctr in features.get("ctrs", [])
                for e in ctr["elements"]
                if e.get("combination_element") == "float_feature"
            }
        )
        # one row per tree, then rows of those CTR borders, `depth` to a row: one comparison
        # and one product give every tree's float part and the key's bits (as integers)
        extra = -(-len(pairs) // depth)
        columns = np.zeros((len(trees) + extra, depth), dtype=np.intp)
        borders = np.full((len(trees) + extra, depth), _NEVER, dtype=np.float32)
        cat_mask = np.zeros(len(trees), dtype=np.int64)
        for t, splits in enumerate(trees):
            for d, split in enumerate(splits):
                if split["split_type"] == "FloatFeature":
                    columns[t, d] = column_of[split["float_feature_index"]]
                    borders[t, d] = np.float32(split["border"])
                else:  # left at "never" here; learned per combination of categorical values
                    cat_mask[t] |= 1 << d
        for i, (column, border) in enumerate(pairs):
            columns[len(trees) + i // depth, i % depth] = column
            borders[len(trees) + i // depth, i % depth] = border
        self._columns = columns
        self._borders = borders
        self._trees = len(trees)
        self._powers = 1 << np.arange(depth, dtype=np.int64)
        self._cat_mask = cat_mask
        self._part_type = np.uint16 if depth <= 16 else np.int64
        self._combinations: dict[tuple[Any, ...], np.ndarray] = {}
        self.usable = True  # False once CatBoost disagreed with the float part

    @classmethod
    def of(cls, info: dict[str, Any]) -> LeafIndexer | None:
        """An indexer for the model's JSON export ``info``, or None when one does not apply."""
        trees = info.get("oblivious_trees")
        if not trees:
            return None
        kinds = {s["split_type"] for tree in trees for s in (tree.get("splits") or [])}
        if not kinds <= {"FloatFeature", "OnlineCtr", "OneHotFeature"}:
            return None
        for ctr in info["features_info"].get("ctrs", []):
            kinds = {e.get("combination_element") for e in ctr["elements"]}
            if not kinds <= {"cat_feature_value", "float_feature"}:
                return None
        return cls(info)

    def leaves(self, values: Sequence[Any]) -> np.ndarray | None:
        """The leaf index per tree for one model-input row, or None when its combination (of
        categorical values and sides of CTR borders) is not known yet (then ``learn`` it from
        CatBoost's answer)."""
        if not self.usable:
            return None
        codes = self._codes(values)
        learned = self._combinations.get(self._key(values, codes))
        if learned is None:
            return None
        return codes[: self._trees] + learned

    def learn(self, values: Sequence[Any], leaves: np.ndarray) -> None:
        """Remember the categorical part of CatBoost's ``leaves`` for ``values``' combination;
        if the float part is not this indexer's, stop answering (``usable``)."""
        found = np.asarray(leaves, dtype=np.int64)
        codes = self._codes(values)
        floats = codes[: self._trees]
        categorical = found - floats
        if np.any((found & ~self._cat_mask) != floats) or np.any(categorical & ~self._cat_mask):
            self.usable = False
            return
        if len(self._combinations) < MAX_COMBINATIONS:  # 2 bytes a tree (depth <= 16)
            self._combinations[self._key(values, codes)] = categorical.astype(self._part_type)

    def _codes(self, values: Sequence[Any]) -> np.ndarray:
        """Per tree its float splits' part of the leaf index, then the CTR borders' bits."""
        x = np.array(self._floats(values), dtype=np.float32)
        if self._as_true is not None:
            # a padding split compares with +inf too: still false (inf > inf is false)
            np.copyto(x, np.float32(np.inf), where=np.isnan(x) & self._as_true)
        return (x.take(self._columns) > self._borders) @ self._powers

    def _key(self, values: Sequence[Any], codes: np.ndarray) -> tuple[Any, ...]:
        cats = self._cats(values) if self._cats else ()
        return (*cats, codes[self._trees :].tobytes())


def _getter(indices: Sequence[int]) -> Any:
    """A callable returning the tuple of the given positions of a sequence."""
    if not indices:
        return lambda values: ()
    if len(indices) == 1:
        only = indices[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*indices)
