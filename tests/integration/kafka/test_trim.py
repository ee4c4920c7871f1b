"""DeleteRecords on the embedded noida broker: what the demo does once bronze has committed."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fraud_platform.lib.kafka.admin import delete_records_before
from fraud_platform.lib.kafka.reader import kafka_watermarks
from fraud_platform.tools.brokers import BrokerSpec

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kafka_broker", ["noida"], indirect=True)
def test_delete_records_before_moves_the_low_watermark_to_the_given_offsets(
    kafka_broker: BrokerSpec, make_topic: Callable[..., str], produce: Callable[..., None]
) -> None:
    topic = make_topic("trim", partitions=2)
    produce(topic, (f"e{i}".encode() for i in range(100)), partitions=2)
    assert kafka_watermarks(topic, kafka_broker.bootstrap) == {0: (0, 50), 1: (0, 50)}

    trimmed = delete_records_before(kafka_broker.bootstrap, {topic: {0: 30, 1: 0}})

    assert trimmed == 1  # an offset of 0 deletes nothing and is not sent
    assert kafka_watermarks(topic, kafka_broker.bootstrap) == {0: (30, 50), 1: (0, 50)}
    assert delete_records_before(kafka_broker.bootstrap, {}) == 0
