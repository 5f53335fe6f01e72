"""`high_watermarks` reads the end of each partition from a fetch, where tansu's ListOffsets(LATEST) is wrong."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiokafka import TopicPartition

from core.settings import Settings
from infra import kafka
from infra.kafka import high_watermarks

pytestmark = pytest.mark.integration


async def test_high_watermarks_count_every_batch_and_empty_partitions(
    local_stack: Settings, new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic(partitions=3)
    producer = kafka.producer(local_stack.kafka)
    await producer.start()
    try:
        # Partition 0: several batches of different sizes (tansu's ListOffsets answers from the newest batch only).
        for size in (7, 1, 12):
            batch = producer.create_batch()
            for i in range(size):
                batch.append(key=None, value=f"r{i}".encode(), timestamp=None)
            await producer.send_batch(batch, topic, partition=0)
        await producer.flush()
        await producer.send_and_wait(topic, b"single", partition=1)
    finally:
        await producer.stop()

    partitions = [TopicPartition(topic, p) for p in range(3)]
    ends = await high_watermarks(local_stack.kafka, partitions)
    assert ends == {partitions[0]: 20, partitions[1]: 1, partitions[2]: 0}
