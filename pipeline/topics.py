"""Every Kafka topic DiffSentry uses, declared once, and their explicit creation.

Topics are created explicitly because brokers that auto-create (tansu does, with 4 partitions) would otherwise
decide partition counts for us.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from pipeline.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    purpose: str


def declared_topics(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    spec = [
        (t.sensor_readings, "sensor readings keyed by asset"),
        (t.video_frames, "video frames keyed by camera"),
        (t.scores, "window and frame scores"),
        (t.alerts, "alert transitions (firing, resolved)"),
        (t.dead_letter, "messages that failed permanently, with the reason"),
    ]
    return [TopicSpec(name, t.partitions, t.replication_factor, purpose) for name, purpose in spec]


async def ensure_topics(settings: Settings, admin: AIOKafkaAdminClient) -> list[str]:
    """Create the declared topics that do not exist yet; returns the names created."""
    existing = set(await admin.list_topics())
    missing = [spec for spec in declared_topics(settings) if spec.name not in existing]
    if missing:
        await admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor) for s in missing]
        )
    return [spec.name for spec in missing]


async def create_declared_topics(settings: Settings) -> list[str]:
    """Connect to the configured broker and create the declared topics that are missing; returns those created."""
    admin = AIOKafkaAdminClient(**settings.kafka.client_options())
    await admin.start()
    try:
        return await ensure_topics(settings, admin)
    finally:
        await admin.close()
