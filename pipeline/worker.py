"""The streaming worker, composed: the topology of ``diffsentry run``, top to bottom as in the README's diagram.

    sensor-readings --SensorLane (decode, validate, window per asset)----+
    video-frames ----VideoLane (decode, validate, frame stack per camera)+--> micro-batched scoring on Triton
        --> threshold per stream --> alerts --> store (scores, alerts) + scores and alerts topics --> commit
    anything invalid or permanently unscorable --> dead-letter topic, with the reason

What every lane goes through is ``operators.engine.StreamEngine``; what differs per modality is in
``operators.lanes``. Here the real clients are chosen: Kafka (``infra.kafka``), Triton (``operators.triton_stage``),
the store (``operators.influx_sink``) and alerting (``pipeline.alerting_service``).

Why an aiokafka loop and not faust agents: a record's offset is committed only once everything it fed is stored,
and one reading feeds several overlapping windows that are scored in batches with other assets' windows and
acknowledged by the store out of order; faust acks an event when its agent moves past it, its ``group_by`` would add
a repartition hop although producers already key readings by asset, and tansu breaks its table recovery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from core.contracts import Alert, AlertEvent, Score
from core.settings import Settings, StreamSettings
from infra.kafka import KafkaPublisher, KafkaSource
from operators.engine import StreamEngine
from operators.influx_sink import InfluxSink, alert_event_point
from operators.lanes import Lane, SensorLane, VideoLane
from operators.model_cards import ModelCardError, card_path, load_ts_card, load_video_card
from operators.ports import AlertObserver, FrameObserver
from operators.resilience import Backoff, BreakerState, CircuitBreaker, breaker_gauge
from operators.triton_stage import TritonStage, replica_breaker_gauge
from pipeline.alerting_service import AlertingService, camera_gallery
from pipeline.health import serve_health

log = logging.getLogger("diffsentry.worker")


def _retry(stream: StreamSettings) -> Backoff:
    return Backoff(initial_s=stream.backoff_initial_s, max_s=stream.backoff_max_s)


def _breaker(stream: StreamSettings, on_state: Callable[[BreakerState], None]) -> CircuitBreaker:
    return CircuitBreaker(stream.breaker_failures, stream.breaker_reset_s, on_state=on_state)


def store_client(settings: Settings) -> InfluxSink:
    """The store behind its circuit breaker, retried by the one policy."""
    influx, stream = settings.influx, settings.stream
    return InfluxSink(
        influx.url, influx.token, influx.org, influx.bucket, batch_size=stream.sink_batch_size,
        flush_interval_s=stream.sink_flush_interval_ms / 1000, timeout_ms=stream.sink_timeout_ms,
        backoff=_retry(stream), breaker=_breaker(stream, breaker_gauge("store")),
    )  # fmt: skip


def clients(settings: Settings) -> tuple[TritonStage, InfluxSink]:
    """Triton (a breaker per replica) and the store (one breaker), retried by the one policy."""
    triton, stream = settings.triton, settings.stream
    scorer = TritonStage(
        triton.grpc_urls, triton.ts_model, triton.video_model, triton.ts_model_version, triton.video_model_version,
        request_timeout_s=triton.request_timeout_s, backoff=_retry(stream),
        breaker=lambda url: _breaker(stream, on_state=replica_breaker_gauge(url)),
    )  # fmt: skip
    return scorer, store_client(settings)


def lanes(settings: Settings, triton: TritonStage, frames: FrameObserver | None = None) -> list[Lane[Any, Any, Any]]:
    """One lane per modality whose model card is usable; a model without a card leaves its topic unread.
    ``frames`` sees the video lane's scored frames with their maps (the console's camera gallery)."""
    repository, models = settings.model_repository, settings.triton
    built: list[Lane[Any, Any, Any]] = []
    for name, load_card, build in (
        (models.ts_model, load_ts_card, lambda card: SensorLane(settings, card, triton.score_ts)),
        (models.video_model, load_video_card, lambda card: VideoLane(settings, card, triton.score_video, frames)),
    ):
        try:
            built.append(build(load_card(card_path(repository, name))))
        except ModelCardError as error:
            log.warning("%s: %s; its topic is not consumed", name, error)
    if not built:
        raise ModelCardError(f"no usable model card under {repository}: nothing to score")
    return built


class ScoresOnly:
    """The scoring role's ``AlertObserver``: no alert state in this process; the alerting role computes the
    transitions from the scores topic."""

    def observe(self, score: Score) -> list[Alert]:
        return []

    def recover(self) -> list[Alert]:
        return []

    def acknowledge(self, alert: Alert) -> None:
        raise AssertionError("the scoring role emits no alerts to acknowledge")


class Worker:
    """``diffsentry run``: the engine over Kafka, Triton and the store, with alerting and a health endpoint."""

    def __init__(self, settings: Settings, alerts: AlertObserver | None = None) -> None:
        self.settings = settings
        self.alerts = alerts  # None: run() starts the AlertingService (engine, subscriptions API, delivery)
        self.alerting: AlertingService | None = None
        self.triton, self.store = clients(settings)
        self.gallery = camera_gallery(settings)
        self.lanes = lanes(settings, self.triton, self.gallery)
        self.engine = StreamEngine(
            settings, self.lanes, KafkaSource(settings), KafkaPublisher(settings.kafka), self.store
        )
        self.health_port: int | None = None

    @property
    def ready(self) -> asyncio.Event:
        return self.engine.ready

    async def run(self, stop: asyncio.Event) -> None:
        breakers = {"triton": self.triton.breaker, "store": self.store.breaker}
        health = await serve_health(self.settings.stream, self.engine, breakers)
        self.health_port = health.addresses[0][1]
        await self.engine.start()
        if self.alerts is None:
            self.alerting = await AlertingService.start(
                self.settings,
                dead_letter=self.engine.publish_dead_letter,
                publish_event=self.publish_event,
                gallery=self.gallery,
            )
        try:
            await self.engine.run(self.alerts or self.alerting, stop)
        finally:
            if self.alerting is not None:  # first: its last events still go out through the engine's clients
                await self.alerting.stop()
            await self.engine.close()
            await self.triton.close()
            await health.cleanup()

    async def publish_event(self, event: AlertEvent) -> None:
        """An alert lifecycle event to the alerts topic (keyed by its stream, like alerts) and the store."""
        key = (event.stream or "lifecycle").encode()
        sent = await self.engine.publisher.send(self.settings.topics.alerts, event.to_json(), key=key)
        await asyncio.gather(sent, self.store.write([alert_event_point(event)]))
