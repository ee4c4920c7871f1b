"""The worker's in-memory copy of the entity stores finds exactly each entity's current rows,
across merges of its tail, against a dict of lists."""

from __future__ import annotations

import random

import polars as pl
import pytest

from fraud_platform.lib.streaming import cache as cache_module
from fraud_platform.lib.streaming.cache import ENTITY, EntityCache


def _rows(entities: list[str], values: list[int]) -> pl.DataFrame:
    return pl.DataFrame(
        [pl.Series("value", values, dtype=pl.Int64), pl.Series(ENTITY, entities, dtype=pl.String)]
    )


@pytest.mark.parametrize("tail_min_rows", [0, 7, 10_000])
def test_rows_of_returns_each_entitys_current_rows(
    monkeypatch: pytest.MonkeyPatch, tail_min_rows: int
) -> None:
    monkeypatch.setattr(cache_module, "TAIL_MIN_ROWS", tail_min_rows)
    rng = random.Random(tail_min_rows)
    cache = EntityCache()
    cache.add(_rows([], []))
    model: dict[str, list[int]] = {}
    value = 0
    for step in range(400):
        pool = [f"e{i}" for i in range(rng.randint(1, 40))]
        if rng.random() < 0.25:  # entities read back from their stores: their rows replaced
            replaced = rng.sample(pool, rng.randint(1, min(5, len(pool))))
            entities, values = [], []
            for entity in replaced:
                model[entity] = []
                for _ in range(rng.randint(0, 3)):
                    value += 1
                    model[entity].append(value)
                    entities.append(entity)
                    values.append(value)
            cache.replace(replaced, _rows(entities, values))
        entities, values = [], []
        for _ in range(rng.randint(0, 30)):
            entity = rng.choice(pool)
            value += 1
            model.setdefault(entity, []).append(value)
            entities.append(entity)
            values.append(value)
        cache.add(_rows(entities, values))
        asked = rng.sample(pool, rng.randint(1, len(pool)))
        got = cache.rows_of(asked)
        assert got.columns == ["value"], step
        expected = sorted(v for entity in asked for v in model.get(entity, []))
        assert sorted(got["value"].to_list()) == expected, step
    assert cache.height >= sum(len(v) for v in model.values())
