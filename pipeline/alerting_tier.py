"""``diffsentry run --role alerting``: the alert state machine as a faust-streaming app over the scores topic.

    scores (keyed by stream) --agent, concurrency 1--> AlertEngine, its states in the faust Table "alert-states"
        --> transitions to the alerts topic (keyed by stream) and the store --> Notifier --> dispatcher (webhooks)

- The table is co-partitioned with the scores topic (same partition count; faust writes a key to the partition of
  the score being processed, ``operators.alert_table``), so the instance assigned partition p holds, restored from
  the changelog, exactly the states of the streams whose scores come in on p. A stream moved by a rebalance or a
  dead instance keeps its phase, its pending clock and its ``alert_id``: the alert fires once and resolves on the
  new owner.
- Concurrency 1: the state machine is sequential per stream, and faust loses messages with agent concurrency > 1
  (faust #606). At least once: an offset is committed only after the agent moved past its score and faust flushed
  the producer (the changelog and the alerts sent for it). A score re-delivered after a crash is late for the
  restored state and changes nothing; alerts its first processing left in the outbox are published then. So a
  transition reaches the alerts topic at least once, always with the same ``alert_id`` (derived from the stream
  and the start time, whichever instance computes it), and the notifier takes each transition once.
- faust table recovery on tansu needs ``infra.tansu_compat`` (chosen by ``infra.faust_app`` for ``kafka.broker``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from core import metrics
from core.contracts import Alert, AlertEvent, ContractError, DeadLetter, Score, decode
from core.settings import Settings
from infra.faust_app import faust_app
from operators.alert_table import TableAlertStateStore
from operators.alerting import stream_key
from operators.dead_letters import record_dead_letter
from operators.influx_sink import alert_event_point, alert_point
from pipeline.alerting_service import AlertingService
from pipeline.health import serve_status
from pipeline.worker import store_client

log = logging.getLogger("diffsentry.alerting_tier")

STATE_TABLE = "alert-states"


class AlertingTier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        tier, topics = settings.alerting_tier, settings.topics
        self.app = faust_app(
            tier.app_id,
            settings.kafka,
            datadir=settings.state_dir / "alerting-tier",
            store=tier.table_store,
            session_timeout_s=tier.session_timeout_s,
            heartbeat_interval_s=tier.heartbeat_interval_s,
            topic_partitions=topics.partitions,
        )
        raw: dict[str, Any] = {
            "key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw",
        }  # fmt: skip
        self.scores = self.app.topic(topics.scores, partitions=topics.partitions, **raw)
        self.alerts = self.app.topic(topics.alerts, partitions=topics.partitions, **raw)
        self.dead_letters = self.app.topic(topics.dead_letter, partitions=topics.partitions, **raw)
        self.table = self.app.Table(STATE_TABLE, partitions=topics.partitions, key_type=str)  # values: JSON objects
        self.states = TableAlertStateStore(self.table)
        self.store = store_client(settings)
        self.service: AlertingService | None = None
        self.app.agent(self.scores, name="alerting", concurrency=1)(self._consume)
        self.app.on_partitions_revoked.connect(self._on_revoked)

    def ready(self) -> bool:
        """The app has joined its group and restored the tables of its partitions."""
        return (
            self.service is not None
            and self.app.tables.recovery.completed.is_set()
            and not self.app.rebalancing
            and not self.app.in_recovery
        )

    def partitions(self) -> list[int]:
        """The scores partitions this instance owns now."""
        scores = self.settings.topics.scores
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == scores)

    def status(self) -> tuple[bool, dict[str, Any]]:
        ready = self.ready()
        stats = self.service.engine.stats if self.service is not None else {}
        return ready, {"status": "ok" if ready else "starting", "partitions": self.partitions(), "transitions": stats}

    async def run(self, stop: asyncio.Event) -> None:
        health = await serve_status(self.settings.stream, self.status)
        await self.store.start()
        self.service = await AlertingService.start(
            self.settings,
            dead_letter=self.publish_dead_letter,
            publish_event=self.publish_event,
            alert_state=self.states,
            api=False,
        )
        await self.app.start()
        try:
            await stop.wait()
        finally:
            await self.app.stop()
            await self.service.stop()
            await self.store.aclose(timeout_s=self.settings.stream.shutdown_grace_s)
            await health.cleanup()

    async def _consume(self, stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                score = decode(Score, event.value)
            except ContractError as error:  # not from a scoring worker: set aside, never a crash of the agent
                # A faust Message has the fields of the aiokafka record the helper reads.
                letter = record_dead_letter(event.message, error, self.settings.stream.dead_letter_max_payload)
                await self.publish_dead_letter(letter)
                continue
            await self._observe(score)

    async def _observe(self, score: Score) -> None:
        assert self.service is not None
        fresh = self.service.observe(score)
        pending = self.states.outbox(stream_key(score.modality, score.stream))
        if len(pending) > len(fresh):  # a previous owner of the stream emitted these, then died before publishing
            self.service.notify_recovered(pending[: len(pending) - len(fresh)])
        for alert in pending:
            await self._publish(alert)
            self.service.acknowledge(alert)  # a table write: here, in the context of this stream's score

    async def _publish(self, alert: Alert) -> None:
        sent = await self.alerts.send(key=alert.stream.encode(), value=alert.to_json())
        await asyncio.gather(sent, self.store.write([alert_point(alert)]))
        metrics.ALERTS.labels(alert.modality, alert.state).inc()

    async def publish_event(self, event: AlertEvent) -> None:
        """An alert lifecycle event to the alerts topic (keyed by its stream, like alerts) and the store."""
        sent = await self.alerts.send(key=(event.stream or "lifecycle").encode(), value=event.to_json())
        await asyncio.gather(sent, self.store.write([alert_event_point(event)]))

    async def publish_dead_letter(self, letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key else None
        await (await self.dead_letters.send(key=key, value=letter.to_json()))
        metrics.DEAD_LETTERS.labels(letter.source_topic, letter.error_type).inc()

    async def _on_revoked(self, app: faust.App, revoked: set[Any], **_: Any) -> None:
        if self.service is not None:  # states of partitions that moved may come back advanced by another instance
            self.service.engine.forget()
