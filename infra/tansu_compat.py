"""faust-streaming on tansu, the local stack's broker: the one client-side fix it needs, and nothing else.

tansu 0.6 answers ListOffsets(LATEST) with the base offset of the newest record batch + 1 instead of the high
watermark. faust's table recovery reads a changelog partition up to that "end" (``consumer.highwaters``), so with
more than one record in the newest batch it stops early and the restored table silently lacks the newest states.
:class:`TansuTransport` is faust's aiokafka transport with that one method answered from a short fetch instead
(``infra.kafka.high_watermarks``: every Fetch response carries the true high watermark). Apache Kafka answers
ListOffsets correctly, so :func:`transport_for` chooses it only where ``kafka.broker`` is ``tansu``.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from core.settings import KafkaSettings
from infra.kafka import high_watermarks


class TansuConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        urls = self.consumer.transport.url
        kafka = KafkaSettings(bootstrap_servers=",".join(f"{url.host}:{url.port or 9092}" for url in urls))
        ends = await high_watermarks(kafka, [TopicPartition(tp.topic, tp.partition) for tp in partitions])
        return {TP(tp.topic, tp.partition): end for tp, end in ends.items()}


class TansuConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> TansuConsumerThread:
        return TansuConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuTransport(faust_aiokafka.Transport):
    Consumer = TansuConsumer


def transport_for(kafka: KafkaSettings) -> type[faust_aiokafka.Transport]:
    """faust's stock aiokafka transport, or on tansu the one whose recovery reads the true high watermark."""
    return TansuTransport if kafka.broker == "tansu" else faust_aiokafka.Transport
