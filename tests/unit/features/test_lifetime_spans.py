"""Lifetime aggregates computed over the whole frame and cut at span starts
(``compute._lifetime_agg``) equal the same aggregates evaluated per (entity, span) with
``over``, the way they were computed before: random frames with many entities, gaps that
restart spans, filtered (null) values at span starts, equal timestamps, huge fixed-point
totals that wrap Int128."""

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_platform.lib.features.compute import (
    LIFETIME_SPAN,
    _fixed_point,
    _lifetime_agg,
    lifetime_span,
)
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, Feature

T0 = datetime(2026, 1, 5, tzinfo=UTC)
GAP = timedelta(days=7)
TS = pl.Datetime("us", "UTC")


def _events(seed: int, n: int, entities: int, huge: bool = False) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        # bursts of 3 days 10-15 days apart (a gap restarts the span), some events on a 7-day
        # grid (exactly the gap apart)
        burst = rng.choice([0, 10, 25, 40]) + rng.uniform(0, 3)
        at = T0 + timedelta(days=rng.choice([burst, rng.randrange(0, 60, 7)]))
        amount = rng.choice([None, rng.uniform(0.01, 5_000.0), 1e11 if huge else 1.0])
        rows.append(
            {
                ENTITY_KEY: f"e{rng.randrange(entities)}",
                FEATURE_TIME: at,
                "amount": amount,
                "channel": rng.choice(["p2p", "card", None]),
                "n": rng.choice([None, rng.randrange(-5, 5)]),
            }
        )
    frame = pl.DataFrame(rows, schema_overrides={FEATURE_TIME: TS})
    return frame.sort(ENTITY_KEY, FEATURE_TIME)


def _span_by_entity(gap: timedelta) -> pl.Expr:
    """The former span number: per entity, how many gaps came before (a window per entity)."""
    restarts = (pl.col(FEATURE_TIME).diff().over(ENTITY_KEY) >= gap).fill_null(False)
    return restarts.cast(pl.Int32).cum_sum().over(ENTITY_KEY)


def _reference(feature: Feature) -> pl.Expr:
    """The aggregate per (entity, span) with ``over`` (the evaluation being replaced)."""
    value = pl.col(feature.column) if feature.column else pl.col(FEATURE_TIME)
    if feature.where is not None:
        column, _, expected = feature.where
        value = pl.when(pl.col(column) == expected).then(value)
    expr = {
        "count": lambda: value.is_not_null().cast(pl.Int64).cum_sum(),
        "fixed_sum": lambda: _fixed_point(value).cum_sum(),
        "fixed_sumsq": lambda: (_fixed_point(value) * _fixed_point(value)).cum_sum(),
        "max": lambda: value.cum_max().forward_fill(),
        "min": lambda: value.cum_min().forward_fill(),
    }[feature.function]()
    return expr.over(ENTITY_KEY, "__old_span").alias(feature.name)


FEATURES = [
    Feature("count_all", "count", None, None, None, "int"),
    Feature("count_p2p", "count", "amount", None, ("channel", "==", "p2p"), "int"),
    Feature("sum_fixed", "fixed_sum", "amount", None, None, "fixed"),
    Feature("sumsq_p2p", "fixed_sumsq", "amount", None, ("channel", "==", "p2p"), "fixed"),
    Feature("first_time", "min", None, None, None, "ts"),
    Feature("last_p2p_time", "max", None, None, ("channel", "==", "p2p"), "ts"),
    Feature("n_max", "max", "n", None, None, "int"),
    Feature("n_min_card", "min", "n", None, ("channel", "==", "card"), "int"),
]


@pytest.mark.parametrize(
    ("seed", "n", "entities", "huge"),
    [(1, 2_000, 300, False), (2, 5_000, 40, False), (3, 500, 500, False), (4, 3_000, 50, True)],
)
def test_cut_spans_equal_per_span_windows(seed: int, n: int, entities: int, huge: bool) -> None:
    events = _events(seed, n, entities, huge)
    with_spans = events.with_columns(lifetime_span(GAP), _span_by_entity(GAP).alias("__old_span"))
    # the new numbering splits the frame exactly where (entity, old span) changes
    pairs = with_spans.select(ENTITY_KEY, "__old_span")
    changes = (pairs != pairs.shift(1)).select(pl.any_horizontal(pl.all()).fill_null(True))
    starts = with_spans[LIFETIME_SPAN] != with_spans[LIFETIME_SPAN].shift(1)
    assert starts.fill_null(True).to_list() == changes.to_series().to_list()
    assert with_spans[LIFETIME_SPAN].n_unique() > with_spans[ENTITY_KEY].n_unique()  # gaps
    got = with_spans.select(*[_lifetime_agg(f) for f in FEATURES])
    expected = with_spans.select(*[_reference(f) for f in FEATURES])
    assert_frame_equal(got, expected)
    if huge:  # the sums of squares wrapped: the cut equals the wrapped per-span sum
        assert (expected["sumsq_p2p"] < 0).any()


def test_a_span_whose_first_values_are_filtered_out_has_no_max_until_its_first_value() -> None:
    frame = pl.DataFrame(
        {
            ENTITY_KEY: ["a", "a", "b", "b", "b"],
            FEATURE_TIME: [T0, T0 + timedelta(days=1), T0, T0 + timedelta(days=1), T0 + GAP * 2],
            "n": [7, 9, None, 3, None],
        },
        schema_overrides={FEATURE_TIME: TS},
    ).with_columns(lifetime_span(GAP))
    got = frame.select(_lifetime_agg(Feature("n_max", "max", "n", None, None, "int")))
    # b's first event has no value yet (a's 9 is another entity's); b's third starts a span
    assert got["n_max"].to_list() == [7, 9, None, 3, None]
