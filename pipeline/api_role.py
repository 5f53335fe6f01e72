"""``diffsentry run --role api``: only the REST API and the console, over the shared subscriptions, silences,
acknowledgements and delivery journal; the alert state machine runs in the alerting role."""

from __future__ import annotations

import asyncio

from core.contracts import AlertEvent, DeadLetter
from core.settings import Settings
from infra.kafka import KafkaPublisher
from operators.influx_sink import alert_event_point
from pipeline.alerting_service import AlertingService
from pipeline.health import serve_status
from pipeline.worker import store_client


async def run_api(settings: Settings, stop: asyncio.Event) -> None:
    publisher, store = KafkaPublisher(settings.kafka, "api"), store_client(settings)
    await publisher.start()
    await store.start()

    async def dead_letter(letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key else None
        await (await publisher.send(settings.topics.dead_letter, letter.to_json(), key=key))

    async def publish_event(event: AlertEvent) -> None:
        """What operators do (acknowledge, silence) to the alerts topic and the store, as the worker does."""
        key = (event.stream or "lifecycle").encode()
        sent = await publisher.send(settings.topics.alerts, event.to_json(), key=key)
        await asyncio.gather(sent, store.write([alert_event_point(event)]))

    service = await AlertingService.start(settings, dead_letter=dead_letter, publish_event=publish_event)
    health = await serve_status(settings.stream, lambda: (True, {"status": "ok", "api": service.api_url}))
    try:
        await stop.wait()
    finally:
        await service.stop()
        await health.cleanup()
        await publisher.stop()
        await store.aclose(timeout_s=settings.stream.shutdown_grace_s)
