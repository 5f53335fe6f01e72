"""Every Kafka topic DiffSentry uses, declared once (created by ``infra.kafka.create_declared_topics``).

Topics are created explicitly because brokers that auto-create (tansu does, with 4 partitions) would otherwise
decide partition counts for us.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import Settings


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
