"""``diffsentry run --role api``: only the REST API and the console, over the shared subscriptions, silences,
acknowledgements and delivery journal; the alert state machine runs in the alerting role.

The console's live view (the overview's streams and phases, the score and alert feeds) follows the scores and
alerts topics: with no consumer group, so every API instance sees every partition, from the newest offset (a view,
not a record; the store keeps the history). Operator events on the alerts topic are not shown again: each instance
shows the ones it made, the event log has them all.
"""

from __future__ import annotations

import asyncio
import logging

from core.contracts import Alert, AlertEvent, ContractError, DeadLetter, Score, decode
from core.settings import Settings
from infra import kafka
from infra.kafka import KafkaPublisher
from operators.influx_sink import alert_event_point
from pipeline.alerting_service import AlertingService
from pipeline.health import serve_status
from pipeline.worker import store_client

log = logging.getLogger("diffsentry.api")


def live_view_item(topic: str, value: bytes | None, settings: Settings) -> Score | Alert | None:
    """What a record of the scores or alerts topic shows on the console: a score, an alert transition, or nothing
    (an operator event, which shares the alerts topic, or a record that is not one of ours: logged, since the view
    is not where bad records are handled)."""
    if value is None:
        return None
    try:
        return decode(Score, value) if topic == settings.topics.scores else decode(Alert, value)
    except ContractError as error:
        if topic == settings.topics.alerts and _is_alert_event(value):
            return None
        log.warning("live view skips a record of %s: %s", topic, error)
        return None


def _is_alert_event(value: bytes) -> bool:
    try:
        decode(AlertEvent, value)
    except ContractError:
        return False
    return True


async def follow_live_view(settings: Settings, service: AlertingService) -> None:
    consumer = kafka.consumer(
        settings.kafka,
        settings.topics.scores,
        settings.topics.alerts,
        client_suffix="api-view",
        group_id=None,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        async for record in consumer:
            item = live_view_item(record.topic, record.value, settings)
            if item is not None:
                service.show(item)
    finally:
        await consumer.stop()


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
    view = asyncio.create_task(follow_live_view(settings, service), name="live-view")
    try:
        await stop.wait()
    finally:
        view.cancel()
        await asyncio.gather(view, return_exceptions=True)
        await service.stop()
        await health.cleanup()
        await publisher.stop()
        await store.aclose(timeout_s=settings.stream.shutdown_grace_s)
