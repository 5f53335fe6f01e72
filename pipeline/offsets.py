"""High watermarks that are right on every broker, tansu included.

tansu 0.6 (the local stack's broker) answers ListOffsets(LATEST) with the base offset of the newest record batch + 1
instead of the high watermark, so ``AIOKafkaConsumer.end_offsets()``, ``seek_to_end()`` and
``auto_offset_reset="latest"`` are wrong there (Apache Kafka answers correctly). Every Fetch response carries the true
high watermark, on both: :func:`high_watermarks` takes it from one short fetch per partition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from pipeline.settings import KafkaSettings

FETCH_WAIT_MS = 100


async def high_watermarks(
    kafka: KafkaSettings, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The offset the next record of each partition will get (its end), read from a fetch response.

    A throwaway consumer without a group fetches once from the start of each partition (at most one batch of
    records per partition crosses the wire; they are dropped). Raises ``TimeoutError`` if a partition gets no fetch
    response within ``timeout_s``.
    """
    wanted = list(partitions)
    consumer = AIOKafkaConsumer(**kafka.client_options(), enable_auto_commit=False, fetch_max_wait_ms=FETCH_WAIT_MS)
    await consumer.start()
    try:
        consumer.assign(wanted)
        # The log start is a valid position on every broker; an end from ListOffsets is exactly what is in doubt.
        await consumer.seek_to_beginning(*wanted)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while missing := [tp for tp in wanted if consumer.highwater(tp) is None]:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch response within {timeout_s} s for {missing}")
            await consumer.getmany(*missing, timeout_ms=FETCH_WAIT_MS)
        return {tp: consumer.highwater(tp) for tp in wanted}
    finally:
        await consumer.stop()
