"""Checks the online rows of stream groups against the reference computation (batch code).

The reference is ``compute_feature_group`` over every event of the topic; every row stored
online for an entity (its retained history) must equal, as stored text (so floats bit for
bit), the reference row at the same feature_time, and the entity's newest online row must be
the newest reference row. Used by the tests and ``benchmarks/stream_freshness.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl
import redis

from fraud_platform.lib.features.compute import compute_feature_group
from fraud_platform.lib.features.online.layout import encode_rows
from fraud_platform.lib.features.registry import FeatureGroup
from fraud_platform.lib.features.shared import hosted
from fraud_platform.lib.streaming.plan import SILVER_TOPICS

PIPELINE_KEYS = 2000


def records_frame(records: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Contract records as a source frame (ids and strings as String, amount Float64)."""
    frame = pl.DataFrame(records, infer_schema_length=None)
    casts = {
        name: pl.String
        for name, dtype in frame.schema.items()
        if dtype == pl.Null or name.endswith("_id")
    }
    return frame.with_columns([pl.col(c).cast(t) for c, t in casts.items()])


def _without_version(member: bytes) -> str:
    text = member.decode()
    return text[: text.rindex(",")] + "]"


def online_mismatches(
    client: redis.Redis,
    groups: Sequence[FeatureGroup],
    records_by_topic: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    limit: int = 20,
) -> tuple[int, int, list[str]]:
    """(rows compared, mismatches, the first ``limit`` described) for the stream groups."""
    compared = mismatched = 0
    details: list[str] = []
    for group in groups:
        if not group.stream or hosted(group):  # a hosted group's rows are its host's
            continue
        records = records_by_topic.get(SILVER_TOPICS[group.source], [])
        if not records:
            continue
        reference = encode_rows(group, compute_feature_group(group, records_frame(records)))
        expected = {
            (key, score): value[: value.rindex(",")] + "]"
            for key, score, value in reference.select("key", "score", "value").iter_rows()
        }
        newest = reference.group_by("key").agg(pl.col("score").max())
        keys = newest["key"].to_list()
        newest_score = dict(zip(keys, newest["score"].to_list(), strict=True))
        for start in range(0, len(keys), PIPELINE_KEYS):
            chunk = keys[start : start + PIPELINE_KEYS]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.zrange(key, 0, -1, withscores=True)
            for key, stored in zip(chunk, pipe.execute(), strict=True):
                problems = []
                if not stored or int(stored[-1][1]) != newest_score[key]:
                    problems.append(
                        f"newest online row {int(stored[-1][1]) if stored else None} != "
                        f"reference {newest_score[key]}"
                    )
                for member, score in stored:
                    compared += 1
                    want = expected.get((key, int(score)))
                    got = _without_version(member)
                    if want != got:
                        problems.append(f"at {int(score)}: online {got} != reference {want}")
                mismatched += len(problems)
                if problems and len(details) < limit:
                    details.append(f"{key}: {problems[0]}")
    return compared, mismatched, details
