"""The one place Kafka clients are built: every producer, consumer and admin client of the project comes from here,
so connection and security settings (SSL, SASL) reach all of them. Also the explicit creation of the declared topics
and high watermarks that are right on every broker.

tansu 0.6 (the local stack's broker) answers ListOffsets(LATEST) with the base offset of the newest record batch + 1
instead of the high watermark, so ``AIOKafkaConsumer.end_offsets()``, ``seek_to_end()`` and
``auto_offset_reset="latest"`` are wrong there (Apache Kafka answers correctly). Every Fetch response carries the true
high watermark, on both: :func:`high_watermarks` takes it from one short fetch per partition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.helpers import create_ssl_context

from core.settings import KafkaSettings, Settings
from core.topics import declared_topics

log = logging.getLogger("diffsentry.kafka")
FETCH_WAIT_MS = 100
# Large record batches: with aiokafka's 16 KiB default, every sender waiting on a full batch wakes and retries at each
# drain, which cost a third of the worker's CPU at a few hundred scores per second.
PRODUCER_BATCH_BYTES = 1 << 20


def connection_options(kafka: KafkaSettings, client_suffix: str = "") -> dict[str, Any]:
    """Connection keyword arguments shared by every aiokafka client: address, client id, security."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": f"{kafka.client_id}-{client_suffix}" if client_suffix else kafka.client_id,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = create_ssl_context()
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = kafka.sasl_password
    return options


def producer(kafka: KafkaSettings, client_suffix: str = "", **overrides: Any) -> AIOKafkaProducer:
    """acks=all, no idempotence (tansu refuses it), large batches; ``overrides`` win."""
    options = {"acks": "all", "enable_idempotence": False, "linger_ms": 2, "max_batch_size": PRODUCER_BATCH_BYTES}
    return AIOKafkaProducer(**connection_options(kafka, client_suffix), **{**options, **overrides})


def consumer(kafka: KafkaSettings, *topics: str, client_suffix: str = "", **overrides: Any) -> AIOKafkaConsumer:
    """No auto commit (offsets are committed exactly by their owner); ``overrides`` win."""
    options = {"enable_auto_commit": False, "auto_offset_reset": "earliest"}
    return AIOKafkaConsumer(*topics, **connection_options(kafka, client_suffix), **{**options, **overrides})


def admin(kafka: KafkaSettings, **overrides: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection_options(kafka, "admin"), **overrides)


async def ensure_topics(settings: Settings, client: AIOKafkaAdminClient) -> list[str]:
    """Create the declared topics that do not exist yet; returns the names created."""
    existing = set(await client.list_topics())
    missing = [spec for spec in declared_topics(settings) if spec.name not in existing]
    if missing:
        await client.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor) for s in missing]
        )
    return [spec.name for spec in missing]


async def create_declared_topics(settings: Settings) -> list[str]:
    """Connect to the configured broker and create the declared topics that are missing; returns those created."""
    client = admin(settings.kafka)
    await client.start()
    try:
        return await ensure_topics(settings, client)
    finally:
        await client.close()


async def high_watermarks(
    kafka: KafkaSettings, partitions: Iterable[TopicPartition], timeout_s: float = 10.0
) -> dict[TopicPartition, int]:
    """The offset the next record of each partition will get (its end), read from a fetch response.

    A throwaway consumer without a group fetches once from the start of each partition (at most one batch of
    records per partition crosses the wire; they are dropped). Raises ``TimeoutError`` if a partition gets no fetch
    response within ``timeout_s``.
    """
    wanted = list(partitions)
    reader = consumer(kafka, client_suffix="watermarks", fetch_max_wait_ms=FETCH_WAIT_MS)
    await reader.start()
    try:
        reader.assign(wanted)
        # The log start is a valid position on every broker; an end from ListOffsets is exactly what is in doubt.
        await reader.seek_to_beginning(*wanted)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while missing := [tp for tp in wanted if reader.highwater(tp) is None]:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch response within {timeout_s} s for {missing}")
            await reader.getmany(*missing, timeout_ms=FETCH_WAIT_MS)
        return {tp: reader.highwater(tp) for tp in wanted}
    finally:
        await reader.stop()


class _Revocations(ConsumerRebalanceListener):
    def __init__(self, on_revoked: Callable[[list[TopicPartition]], Awaitable[None]]) -> None:
        self.on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class KafkaSource:
    """The worker's consumer group member (``operators.ports.RecordSource``): no auto commit, earliest reset,
    the short session timeouts tansu needs (it answers JoinGroup after about session_timeout / 2)."""

    def __init__(self, settings: Settings) -> None:
        stream = settings.stream
        self.consumer = consumer(
            settings.kafka,
            client_suffix="worker",
            group_id=settings.kafka.consumer_group,
            session_timeout_ms=stream.session_timeout_ms,
            heartbeat_interval_ms=stream.heartbeat_interval_ms,
            rebalance_timeout_ms=stream.session_timeout_ms,
            max_poll_records=stream.fetch_max_records,
        )

    async def start(self, topics: list[str], on_revoked: Callable[[list[TopicPartition]], Awaitable[None]]) -> None:
        await self.consumer.start()
        self.consumer.subscribe(topics, listener=_Revocations(on_revoked))

    async def fetch(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        return await self.consumer.getmany(timeout_ms=timeout_ms)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.consumer.commit(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        # From fetch responses, so it is right even where tansu's ListOffsets(LATEST) is not.
        return self.consumer.highwater(tp)

    async def stop(self) -> None:
        await self.consumer.stop()


class KafkaPublisher:
    """``operators.ports.Publisher`` over one producer."""

    def __init__(self, kafka: KafkaSettings, client_suffix: str = "worker") -> None:
        self.producer = producer(kafka, client_suffix)

    async def start(self) -> None:
        await self.producer.start()

    async def send(self, topic: str, value: bytes, key: bytes | None) -> Awaitable[Any]:
        return await self.producer.send(topic, value, key=key)

    async def stop(self) -> None:
        await self.producer.stop()
