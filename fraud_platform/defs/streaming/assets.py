"""``online/feature_stream``: the stream worker (``fraud-platform stream``) as an asset.

Its lineage reads from the topics it consumes (external assets ``kafka/<topic>``); observing it
records the consumer group's lag per topic and the age of the worker's last applied batch, and
the check ``feature_stream_is_current`` fails when either passes its threshold.
"""

from typing import Any

import dagster as dg

from fraud_platform.lib.features.catalog import FEATURE_GROUPS
from fraud_platform.lib.streaming.health import consumer_lag, last_batch_age_s
from fraud_platform.lib.streaming.plan import stream_plan, stream_topics
from fraud_platform.names import (
    FEATURE_STREAM_ASSET,
    FEATURE_STREAM_CONSUMER_GROUP,
    topic_asset,
)
from fraud_platform.resources.kafka import KafkaResource
from fraud_platform.resources.redis import RedisResource

PLAN = stream_plan(FEATURE_GROUPS)
TOPICS = stream_topics(PLAN)
STREAM_KEY = dg.AssetKey(FEATURE_STREAM_ASSET.split("/"))
TOPIC_SPECS = [
    dg.AssetSpec(
        dg.AssetKey(topic_asset(topic).split("/")),
        description=f"The Kafka topic {topic!r} (event contract in the README).",
        group_name="streaming",
        kinds={"kafka"},
    )
    for topic in TOPICS
]
STREAMED = sorted(g.versioned_name for s in PLAN for g in s.groups)


class FeatureStreamConfig(dg.Config):
    max_lag_events: int = 50_000
    max_batch_age_s: float = 60.0


def _observe(kafka: KafkaResource, redis: RedisResource) -> dict[str, Any]:
    lags = consumer_lag(kafka.bootstrap_servers, FEATURE_STREAM_CONSUMER_GROUP, TOPICS)
    age = last_batch_age_s(redis.client(), FEATURE_STREAM_CONSUMER_GROUP)
    metadata: dict[str, Any] = {
        "consumer_lag_events": sum(t.lag for t in lags),
        "last_batch_age_s": dg.MetadataValue.float(round(age, 3)) if age is not None else None,
        "groups_maintained": ", ".join(STREAMED),
    }
    for t in lags:
        metadata[f"lag_{t.topic}"] = t.lag
    return metadata


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            STREAM_KEY,
            deps=[spec.key for spec in TOPIC_SPECS],
            description=(
                "The stream worker keeping the online store current, event by event, for every "
                f"feature group declared stream=True ({', '.join(STREAMED)}). Observations: "
                "consumer lag per topic and the age of the last applied batch."
            ),
            group_name="streaming",
            kinds={"redis", "kafka"},
        )
    ],
)
def feature_stream(kafka: KafkaResource, redis: RedisResource):
    yield dg.ObserveResult(asset_key=STREAM_KEY, metadata=_observe(kafka, redis))


@dg.asset_check(
    asset=STREAM_KEY,
    description="The stream worker is keeping up: consumer lag and last-batch age under limits.",
)
def feature_stream_is_current(
    config: FeatureStreamConfig, kafka: KafkaResource, redis: RedisResource
) -> dg.AssetCheckResult:
    metadata = _observe(kafka, redis)
    lag = metadata["consumer_lag_events"]
    age = last_batch_age_s(redis.client(), FEATURE_STREAM_CONSUMER_GROUP)
    reasons = []
    if isinstance(lag, int) and lag > config.max_lag_events:
        reasons.append(f"lag {lag} > {config.max_lag_events} events")
    if age is None or age > config.max_batch_age_s:
        reasons.append(f"last batch {age if age is None else round(age)} s ago")
    return dg.AssetCheckResult(
        passed=not reasons,
        metadata={
            **metadata,
            "limit_lag_events": config.max_lag_events,
            "limit_batch_age_s": config.max_batch_age_s,
            "reason": "; ".join(reasons) or "ok",
        },
    )


defs = dg.Definitions(
    assets=[*TOPIC_SPECS, feature_stream],
    asset_checks=[feature_stream_is_current],
)
