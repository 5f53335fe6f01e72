"""The broker of the local stack speaks the Kafka protocol the pipeline relies on (aiokafka and faust)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from core.settings import Settings

pytestmark = pytest.mark.integration

# tansu answers JoinGroup after about session_timeout / 2: short sessions keep group tests quick.
GROUP_TIMEOUTS = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000, "rebalance_timeout_ms": 3000}


async def _produce(settings: Settings, topic: str, values: list[bytes], key: bytes = b"asset-1") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def _take(consumer: AIOKafkaConsumer, count: int, give_up_s: float = 30.0) -> list[ConsumerRecord]:
    """The next ``count`` records (fewer only if the broker has no more within ``give_up_s``)."""
    records: list[ConsumerRecord] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    while len(records) < count and loop.time() < deadline:
        batches = await consumer.getmany(timeout_ms=500, max_records=count - len(records))
        for batch in batches.values():
            records.extend(batch)
    return records


async def test_messages_come_back_in_order_with_keys(
    local_stack: Settings, new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic(partitions=1)
    values = [f"reading-{i}".encode() for i in range(20)]
    await _produce(local_stack, topic, values)

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=local_stack.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records = await _take(consumer, len(values))
    finally:
        await consumer.stop()
    assert [r.value for r in records] == values
    assert {r.key for r in records} == {b"asset-1"}
    assert [r.offset for r in records] == list(range(len(values)))


async def test_consumer_group_resumes_from_committed_offset(
    local_stack: Settings, new_topic: Callable[..., Awaitable[str]]
) -> None:
    topic = await new_topic(partitions=1)
    values = [f"m{i}".encode() for i in range(10)]
    await _produce(local_stack, topic, values)
    group = f"resume-{uuid.uuid4().hex[:8]}"

    def group_consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=local_stack.kafka.bootstrap_servers,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **GROUP_TIMEOUTS,
        )

    first = group_consumer()
    await first.start()
    try:
        head = await _take(first, 4)
        await first.commit({TopicPartition(topic, 0): head[-1].offset + 1})
    finally:
        await first.stop()
    assert [r.value for r in head] == values[:4]

    second = group_consumer()
    await second.start()
    try:
        rest = await _take(second, 6)
        committed = await second.committed(TopicPartition(topic, 0))
    finally:
        await second.stop()
    assert committed == 4
    assert [r.value for r in rest] == values[4:]


async def test_faust_agent_round_trip(
    local_stack: Settings, new_topic: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    source_name = await new_topic(partitions=1, prefix="faust-in")
    sink_name = await new_topic(partitions=1, prefix="faust-out")
    app = faust.App(
        f"diffsentry-test-{uuid.uuid4().hex[:8]}",
        broker=f"kafka://{local_stack.kafka.bootstrap_servers}",
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
        broker_session_timeout=3,
        broker_heartbeat_interval=1,
        broker_rebalance_timeout=3,
        topic_partitions=1,
    )
    source = app.topic(source_name, value_type=bytes, value_serializer="raw")
    sink = app.topic(sink_name, value_type=bytes, value_serializer="raw")

    @app.agent(source)
    async def shout(stream):
        async for value in stream:
            await sink.send(value=value.upper())

    consumer = AIOKafkaConsumer(
        sink_name, bootstrap_servers=local_stack.kafka.bootstrap_servers, auto_offset_reset="earliest"
    )
    await app.start()
    await consumer.start()
    try:
        await _produce(local_stack, source_name, [b"pump-1 ok", b"pump-2 leak"])
        records = await _take(consumer, 2)
    finally:
        await consumer.stop()
        await app.stop()
    assert [r.value for r in records] == [b"PUMP-1 OK", b"PUMP-2 LEAK"]
