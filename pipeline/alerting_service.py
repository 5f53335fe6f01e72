"""The alerting side of ``diffsentry run`` in one object: engine, subscriptions, delivery and the API server.

Usage from the scoring loop (scores in, alert transitions out to the alerts topic)::

    alerting = await AlertingService.start(settings, dead_letter=send_dead_letter)
    for alert in alerting.recover():             # emitted before a crash but never published
        await publish(alert); alerting.acknowledge(alert)
    ...
    for alert in alerting.observe(score):        # already queued for subscribers and SSE, never waits on them
        await publish(alert); alerting.acknowledge(alert)
    ...
    await alerting.stop()
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from core.contracts import Alert, Score
from core.settings import Settings
from operators.alerting import AlertEngine, SqliteAlertStateStore
from operators.delivery import AlertDispatcher, AlertHub, DeadLetterSink, DeliveryJournal
from operators.notifications import transition_notification
from operators.outbound import OutboundPolicy
from operators.subscriptions import SubscriptionStore
from pipeline.subscriptions_api import serve_api

ALERT_STATE_FILE = "alerts.sqlite"
SUBSCRIPTIONS_FILE = "subscriptions.sqlite"


@dataclass
class AlertingService:
    engine: AlertEngine
    subscriptions: SubscriptionStore
    dispatcher: AlertDispatcher
    hub: AlertHub
    runner: web.AppRunner
    _alert_state: SqliteAlertStateStore
    _journal: DeliveryJournal

    @classmethod
    async def start(cls, settings: Settings, *, dead_letter: DeadLetterSink) -> AlertingService:
        """Opens the stores under ``state_dir``, resumes pending webhook deliveries and starts the API server."""
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
            external_url=settings.api.public_url(),
            outbound=OutboundPolicy.from_settings(settings),
        )
        await dispatcher.start()
        runner = await serve_api(settings, subscriptions, hub, dispatcher)
        engine = AlertEngine(settings.alerting, alert_state)
        return cls(engine, subscriptions, dispatcher, hub, runner, alert_state, journal)

    @property
    def api_url(self) -> str:
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def observe(self, score: Score) -> list[Alert]:
        """The alert transitions of this score, already queued for subscribers; publish, then acknowledge them."""
        alerts = self.engine.observe(score)
        for alert in alerts:
            self._notify(alert)
        return alerts

    def recover(self) -> list[Alert]:
        """Alerts a previous run emitted but never acknowledged; queued again (subscribers dedupe) for publishing."""
        alerts = self.engine.unpublished()
        for alert in alerts:
            self._notify(alert)
        return alerts

    def _notify(self, alert: Alert) -> None:
        """To SSE listeners, and to subscribers as a notification of its own (the Notifier of the alert
        lifecycle, grouping and silencing, takes this place)."""
        self.hub.publish(alert)
        self.dispatcher.submit(transition_notification(alert))

    def acknowledge(self, alert: Alert) -> None:
        self.engine.acknowledge(alert)

    async def stop(self) -> None:
        """Stops the API and the deliveries (pending ones resume at the next start) and closes the stores."""
        await self.runner.cleanup()
        await self.dispatcher.stop()
        self._alert_state.close()
        self.subscriptions.close()
        self._journal.close()
