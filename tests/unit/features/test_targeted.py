"""``compute_rows_since`` (the stream worker's rows of chosen points) against the reference,
``compute_feature_group`` over the same events: equal bit for bit, every stream group, with
ties at one instant, filtered-out (null) values, late points and entities without rows."""

import random
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.features.compute import compute_feature_group, feature_group_query
from fraud_platform.lib.features.registry import ENTITY_KEY, FEATURE_TIME, FeatureGroup
from fraud_platform.lib.features.targeted import (
    SINCE,
    compute_rows_since,
    prepare_events,
    rows_since_query,
)
from fraud_platform.lib.features.windows import at_lookup
from fraud_platform.lib.streaming.plan import stream_plan

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _source(stream_columns: tuple[str, ...], n: int, seed: int) -> pl.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        user = f"u{rng.randrange(6)}"
        # minutes over 40 days, a few events of one user at the same instant (ties)
        minute = rng.randrange(40 * 24 * 60) if i % 7 else rows[-1]["event_time"] if rows else 0
        at = minute if isinstance(minute, datetime) else T0 + timedelta(minutes=minute)
        channel = rng.choice(["ecommerce", "p2p", "withdrawal"])
        row = {
            "event_time": at,
            "transaction_id": f"t{i}",
            "event_id": f"a{i}",
            "user_id": user,
            "card_id": f"{user}-c{rng.randrange(2)}",
            "merchant_id": f"m{rng.randrange(4)}",
            "counterparty_id": f"p{rng.randrange(3)}" if channel == "p2p" else None,
            "device_id": f"{user}-d{rng.randrange(3)}",
            "country": rng.choice(["DE", "FR", None]),
            "channel": channel,
            "amount": round(rng.uniform(0.5, 900), 2),
            "event_type": rng.choice(["login", "login_failed", "password_change"]),
        }
        rows.append(row)
    frame = pl.DataFrame(rows, schema_overrides={"event_time": pl.Datetime("us", "UTC")})
    return frame.select(stream_columns)


STREAM_GROUPS = [(s, g) for s in stream_plan(FEATURE_GROUPS) for g in s.groups]


@pytest.mark.parametrize(
    ("stream", "group"), STREAM_GROUPS, ids=[g.versioned_name for _, g in STREAM_GROUPS]
)
def test_rows_since_equal_the_whole_history_rows(stream, group: FeatureGroup) -> None:
    source = _source(stream.columns, 1500, seed=len(group.name))
    reference = compute_feature_group(group, source)
    entities = reference[ENTITY_KEY].unique().sort().to_list()
    rng = random.Random(7)
    # per entity a start somewhere in its history (a late event), at an event, or after the last
    starts = []
    for entity in entities[:-1]:
        times = reference.filter(pl.col(ENTITY_KEY) == entity)[FEATURE_TIME]
        choice = rng.choice([times.min(), times.max(), times[len(times) // 2]])
        starts.append((entity, int(choice.timestamp() * 1_000_000)))
    starts.append(("nobody", 0))  # an entity without events: no rows
    since = pl.DataFrame(starts, schema={ENTITY_KEY: pl.String, SINCE: pl.Int64}, orient="row")
    wanted = reference.join(since, on=ENTITY_KEY).filter(
        pl.col(FEATURE_TIME).dt.epoch("us") >= pl.col(SINCE)
    )
    got = compute_rows_since(group, prepare_events(group, source), since)
    assert got.height == wanted.height > 0
    assert_frame_equal(got, wanted.drop(SINCE), check_exact=True)


@pytest.mark.parametrize(
    ("stream", "group"), STREAM_GROUPS, ids=[g.versioned_name for _, g in STREAM_GROUPS]
)
def test_rows_without_at_lookup_values_keep_every_other_column(stream, group: FeatureGroup) -> None:
    """The stream's rows (``at_lookup_values=False``): the features evaluated at the lookup are
    typed nulls, every other column (lifetime values, prefix totals, profiles) the reference's
    bit for bit, through both the targeted and the whole-history query."""
    source = _source(stream.columns, 800, seed=len(group.name) + 1)
    reference = compute_feature_group(group, source)
    at = [f.name for f in group.features if at_lookup(f)]
    expected = reference.with_columns(pl.lit(None, reference.schema[n]).alias(n) for n in at)
    since = pl.DataFrame(
        {ENTITY_KEY: reference[ENTITY_KEY].unique(), SINCE: 0},
        schema={ENTITY_KEY: pl.String, SINCE: pl.Int64},
    )
    targeted = rows_since_query(
        group, prepare_events(group, source), since, at_lookup_values=False
    ).collect()
    whole = feature_group_query(group, source, at_lookup_values=False).collect()
    assert targeted.height == reference.height > 0
    assert_frame_equal(targeted, expected, check_exact=True)
    assert_frame_equal(whole, expected, check_exact=True)
