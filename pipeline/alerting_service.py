"""The alerting side of ``diffsentry run`` in one object: engine, subscriptions, delivery and the API server.

Usage from the scoring loop (scores in, alert transitions out to the alerts topic)::

    alerting = await AlertingService.start(settings, dead_letter=send_dead_letter)
    for alert in alerting.recover():             # emitted before a crash but never published
        await publish(alert); alerting.acknowledge(alert)
    ...
    for alert in alerting.observe(score):        # already queued for webhooks and SSE, never waits on them
        await publish(alert); alerting.acknowledge(alert)
    ...
    await alerting.stop()
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from core.contracts import Alert, Score
from core.settings import Settings
from infra.store_query import StoreReader
from operators.alerting import AlertEngine, SqliteAlertStateStore
from operators.camera_gallery import CameraGallery
from operators.delivery import AlertDispatcher, AlertHub, DeadLetterSink, DeliveryJournal
from operators.outbound import OutboundPolicy
from operators.stream_board import StreamBoard
from operators.subscriptions import SubscriptionStore
from pipeline.console import ConsoleSources
from pipeline.subscriptions_api import serve_api

ALERT_STATE_FILE = "alerts.sqlite"
SUBSCRIPTIONS_FILE = "subscriptions.sqlite"
SNAPSHOTS_DIR = "snapshots"


def camera_gallery(settings: Settings) -> CameraGallery:
    """The console's camera gallery, its alert snapshots under ``<state_dir>/snapshots``."""
    api = settings.api
    return CameraGallery(settings.state_dir / SNAPSHOTS_DIR, api.snapshot_keep, api.snapshot_max_age_s)


@dataclass
class AlertingService:
    engine: AlertEngine
    subscriptions: SubscriptionStore
    dispatcher: AlertDispatcher
    hub: AlertHub
    board: StreamBoard
    gallery: CameraGallery
    runner: web.AppRunner
    _alert_state: SqliteAlertStateStore
    _journal: DeliveryJournal

    @classmethod
    async def start(
        cls, settings: Settings, *, dead_letter: DeadLetterSink, gallery: CameraGallery | None = None
    ) -> AlertingService:
        """Opens the stores under ``state_dir``, resumes pending webhook deliveries and starts the API server
        (with the console; ``gallery``: the one the video lane feeds frames to)."""
        alert_state = SqliteAlertStateStore(settings.state_dir / ALERT_STATE_FILE)
        subscriptions = SubscriptionStore(settings.state_dir / SUBSCRIPTIONS_FILE, settings.delivery.secrets_key)
        journal = DeliveryJournal(settings.state_dir / SUBSCRIPTIONS_FILE)
        hub = AlertHub()
        dispatcher = AlertDispatcher(
            subscriptions,
            journal,
            settings=settings.delivery,
            dead_letter=dead_letter,
            source_topic=settings.topics.alerts,
            hub=hub,
            outbound=OutboundPolicy.from_settings(settings),
        )
        await dispatcher.start()
        board, gallery = StreamBoard(), gallery or camera_gallery(settings)
        console = ConsoleSources(board, gallery, StoreReader(settings.influx))
        runner = await serve_api(settings, subscriptions, hub, dispatcher, console)
        engine = AlertEngine(settings.alerting, alert_state)
        return cls(engine, subscriptions, dispatcher, hub, board, gallery, runner, alert_state, journal)

    @property
    def api_url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def observe(self, score: Score) -> list[Alert]:
        """The alert transitions of this score, already queued for subscribers; publish, then acknowledge them."""
        alerts = self.engine.observe(score)
        for alert in alerts:
            self.dispatcher.submit(alert)
        self.board.record(score, alerts)
        if score.modality == "video":
            self.gallery.record(score, alerts)
        return alerts

    def recover(self) -> list[Alert]:
        """Alerts a previous run emitted but never acknowledged; queued again (subscribers dedupe) for publishing."""
        alerts = self.engine.unpublished()
        for alert in alerts:
            self.dispatcher.submit(alert)
        return alerts

    def acknowledge(self, alert: Alert) -> None:
        self.engine.acknowledge(alert)

    async def stop(self) -> None:
        """Stops the API and the deliveries (pending ones resume at the next start) and closes the stores."""
        await self.runner.cleanup()
        await self.dispatcher.stop()
        self._alert_state.close()
        self.subscriptions.close()
        self._journal.close()
