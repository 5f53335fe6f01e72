"""The clients the engine is given, as protocols: Kafka, the store and alerting in production (``infra.kafka``,
``operators.influx_sink``, ``pipeline.alerting_service``), in-memory fakes in unit tests; and what a lane may hand
its measurements to (``FrameObserver``: the camera gallery)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition
from influxdb_client import Point

from core.contracts import Alert, Score

RevokedCallback = Callable[[list[TopicPartition]], Awaitable[None]]


class RecordSource(Protocol):
    """A consumer group member: records of its assigned partitions, exact commits."""

    async def start(self, topics: list[str], on_revoked: RevokedCallback) -> None: ...

    async def fetch(self, timeout_ms: int) -> dict[TopicPartition, list[ConsumerRecord]]: ...

    async def commit(self, offsets: dict[TopicPartition, int]) -> None: ...

    def highwater(self, tp: TopicPartition) -> int | None: ...

    async def stop(self) -> None: ...


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def send(self, topic: str, value: bytes, key: bytes | None) -> Awaitable[Any]:
        """Queues the record; the returned awaitable resolves once the broker has it."""
        ...

    async def stop(self) -> None: ...


class PointSink(Protocol):
    async def start(self) -> None: ...

    def write(self, points: list[Point]) -> asyncio.Future[None]:
        """Queues points; the future resolves once the store acknowledged all of them."""
        ...

    async def aclose(self, timeout_s: float) -> None:
        """Write what is buffered, waiting at most ``timeout_s`` for the store, then close."""
        ...


class AlertObserver(Protocol):
    """Sees every score in stream order and returns the alert transitions it causes; each is acknowledged once
    published (topic and store)."""

    def observe(self, score: Score) -> list[Alert]: ...

    def recover(self) -> list[Alert]: ...

    def acknowledge(self, alert: Alert) -> None: ...


class FrameObserver(Protocol):
    """Sees the scored frame of every video stack with its anomaly map (the console's camera gallery)."""

    def observe_frame(self, camera: str, event_time: float, frame: np.ndarray, anomaly_map: np.ndarray) -> None: ...
