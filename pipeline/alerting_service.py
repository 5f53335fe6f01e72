"""The alerting side of ``diffsentry run`` in one object: engine, notifier, subscriptions, delivery and the API.

    scores --AlertEngine (event time)--> transitions --Notifier (wall clock: silences, acks, grouping, repeat)-->
        notifications --AlertDispatcher--> webhooks, SSE
    every AlertEvent the Notifier makes (transitions, timers, API calls) --> ``publish_event`` (topic and store)
        and the AlertHub (SSE ``event: alert_event``, the console's live pages)

Usage from the scoring loop (scores in, alert transitions out to the alerts topic)::

    alerting = await AlertingService.start(settings, dead_letter=send_dead_letter, publish_event=send_event)
    for alert in alerting.recover():             # emitted before a crash but never published
        await publish(alert); alerting.acknowledge(alert)
    ...
    for alert in alerting.observe(score):        # already queued for subscribers and SSE, never waits on them
        await publish(alert); alerting.acknowledge(alert)
    ...
    await alerting.stop()
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from core.contracts import Alert, AlertEvent, Score
from core.settings import Settings
from infra.store_query import StoreReader
from operators.alerting import AlertEngine, AlertStateStore, SqliteAlertStateStore
from operators.camera_gallery import CameraGallery
from operators.delivery import AlertDispatcher, AlertHub, DeadLetterSink
from operators.notifier import Notifier
from operators.outbound import OutboundPolicy
from operators.shared_state import SharedState
from operators.stream_board import StreamBoard
from operators.subscriptions import SubscriptionStore
from pipeline.console import ConsoleSources
from pipeline.subscriptions_api import serve_api

ALERT_STATE_FILE = "alerts.sqlite"
SNAPSHOTS_DIR = "snapshots"
TICK_INTERVAL_S = 1.0
EVENT_DRAIN_S = 5.0  # how long stop() waits for events still being published

EventPublisher = Callable[[AlertEvent], Awaitable[None]]

log = logging.getLogger("diffsentry.alerting")


async def _tick_forever(notifier: Notifier) -> None:
    while True:
        await asyncio.sleep(TICK_INTERVAL_S)
        try:
            notifier.tick()
        except Exception:  # a failing tick (the disk, say) must not end the timers for good
            log.exception("notifier tick failed")


async def _discard(event: AlertEvent) -> None:
    """Where events go when the caller publishes none (they are still in the LifecycleStore's log)."""


async def _publish_forever(queue: asyncio.Queue[AlertEvent], publish_event: EventPublisher) -> None:
    while True:
        event = await queue.get()
        try:
            await publish_event(event)
        except Exception:  # the event is in the LifecycleStore's log either way
            log.exception("publishing alert event %s failed", event.event_id)
        finally:
            queue.task_done()


def camera_gallery(settings: Settings) -> CameraGallery:
    """The console's camera gallery, its alert snapshots under ``<state_dir>/snapshots``."""
    api = settings.api
    return CameraGallery(settings.state_dir / SNAPSHOTS_DIR, api.snapshot_keep, api.snapshot_max_age_s)


@dataclass
class AlertingService:
    engine: AlertEngine
    notifier: Notifier
    subscriptions: SubscriptionStore
    dispatcher: AlertDispatcher
    hub: AlertHub
    board: StreamBoard
    gallery: CameraGallery
    runner: web.AppRunner | None
    _own_alert_state: SqliteAlertStateStore | None
    _shared: SharedState
    _events: asyncio.Queue[AlertEvent]
    _ticker: asyncio.Task[None]
    _publisher: asyncio.Task[None]

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        dead_letter: DeadLetterSink,
        publish_event: EventPublisher | None = None,
        gallery: CameraGallery | None = None,
        alert_state: AlertStateStore | None = None,
        api: bool = True,
    ) -> AlertingService:
        """Opens the stores (the shared ones on ``database.url``, the alert state under ``state_dir`` unless
        ``alert_state`` is given), resumes pending webhook deliveries, starts the API server (with the console;
        ``gallery``: the one the video lane feeds frames to; ``api=False``: none, the alerting role, whose API
        instances run apart) and the notifier's timers; every AlertEvent goes to the hub's event listeners and to
        ``publish_event`` (in order, never blocking the caller)."""
        own_alert_state = SqliteAlertStateStore(settings.state_dir / ALERT_STATE_FILE) if alert_state is None else None
        shared = SharedState.open(settings)
        subscriptions = shared.subscriptions
        hub = AlertHub()
        dispatcher = AlertDispatcher(
            subscriptions,
            shared.journal,
            settings=settings.delivery,
            dead_letter=dead_letter,
            source_topic=settings.topics.alerts,
            external_url=settings.api.public_url(),
            outbound=OutboundPolicy.from_settings(settings),
        )
        await dispatcher.start()
        events: asyncio.Queue[AlertEvent] = asyncio.Queue()

        def queue_events(made: list[AlertEvent]) -> None:
            for event in made:
                events.put_nowait(event)
                hub.publish_event(event)

        notifier = Notifier(settings.alerting, shared.lifecycle, dispatcher, on_events=queue_events)
        board, gallery = StreamBoard(), gallery or camera_gallery(settings)
        console = ConsoleSources(board, gallery, StoreReader(settings.influx), alert_status=notifier.status)
        runner = await serve_api(settings, subscriptions, hub, dispatcher, notifier, console) if api else None
        engine = AlertEngine(settings.alerting, alert_state or own_alert_state)
        ticker = asyncio.create_task(_tick_forever(notifier), name="notifier-tick")
        publisher = asyncio.create_task(_publish_forever(events, publish_event or _discard), name="alert-events")
        return cls(
            engine, notifier, subscriptions, dispatcher, hub, board, gallery, runner, own_alert_state, shared,
            events, ticker, publisher,
        )  # fmt: skip

    @property
    def api_url(self) -> str:
        assert self.runner is not None, "started without the API"
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def observe(self, score: Score) -> list[Alert]:
        """The alert transitions of this score, already handed to the notifier; publish, then acknowledge them."""
        alerts = self.engine.observe(score)
        for alert in alerts:
            self._notify(alert)
        self.board.record(score, alerts)
        if score.modality == "video":
            self.gallery.record(score, alerts)
        return alerts

    def show(self, observed: Score | Alert) -> None:
        """A score or a transition made elsewhere (the API role follows the scores and alerts topics): to the
        console's board and, for a transition, to the live feed; no state machine, no notification."""
        if isinstance(observed, Score):
            self.board.record(observed, [])
        else:
            self.board.record_alert(observed)
            self.hub.publish(observed)

    def recover(self) -> list[Alert]:
        """Alerts a previous run emitted but never acknowledged, for publishing; the notifier takes each transition
        once, so those it handled before the crash are not notified again."""
        alerts = self.engine.unpublished()
        for alert in alerts:
            self._notify(alert)
        return alerts

    def notify_recovered(self, alerts: list[Alert]) -> None:
        """Alerts another instance emitted but never published (the alerting tier finds them in a stream's state):
        to the notifier like ``recover``'s, which takes each transition once."""
        for alert in alerts:
            self._notify(alert)

    def _notify(self, alert: Alert) -> None:
        """To the live SSE feed (every transition, as the console shows them), and to the notifier, which decides
        what subscribers receive."""
        self.hub.publish(alert)
        self.notifier.handle(alert)

    def acknowledge(self, alert: Alert) -> None:
        self.engine.acknowledge(alert)

    async def stop(self) -> None:
        """Stops the API, the timers, the event publishing (after the events made so far, for up to
        ``EVENT_DRAIN_S``) and the deliveries (pending ones resume at the next start) and closes the stores."""
        if self.runner is not None:
            await self.runner.cleanup()
        self._ticker.cancel()
        try:
            await asyncio.wait_for(self._events.join(), EVENT_DRAIN_S)
        except TimeoutError:
            log.warning("%d alert events not published at stop (they are in the event log)", self._events.qsize())
        self._publisher.cancel()
        await asyncio.gather(self._ticker, self._publisher, return_exceptions=True)
        await self.dispatcher.stop()
        if self._own_alert_state is not None:
            self._own_alert_state.close()
        self._shared.close()
