"""Notification delivery: every channel of every matching subscription, with retries and a dead-letter topic;
and the live fan-out of alerts and alert-lifecycle events to SSE listeners (:class:`AlertHub`, fed by the caller).

``AlertDispatcher.submit(notification)`` only writes a journal row per matching subscription and channel
(``operators/channels.py``: the webhook, each apprise URL) and starts a task, so the scoring path never waits on a
subscriber. Each subscription gets the notification with only the alerts its selector takes (none: nothing).
Deliveries to one channel of one subscription about one group go out in order (a resolve never overtakes its
firing, even across retries); everything else runs concurrently, at most ``concurrency`` at a time.
Each delivery is tried until it succeeds, fails permanently (a webhook's 4xx other than 408/425/429, a target the
outbound policy refuses) or runs out of attempts (``operators.resilience``: exponential backoff with jitter,
``max_attempts``); then it goes to the dead-letter sink, the notification JSON as payload.
The journal (sqlite) makes delivery at-least-once across restarts: ``start`` resumes deliveries left pending.
Finished deliveries (delivered, dead-lettered, cancelled) leave the journal ``journal_retention_s`` after their last
update, so it does not grow without bound; a notification submitted again after that is delivered again (receivers
dedupe on the ``Idempotency-Key`` header, the notification id).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from core.contracts import Alert, AlertEvent, DeadLetter, Notification, decode
from core.settings import DeliverySettings
from operators.channels import WEBHOOK_CHANNEL, ChannelFactory, DeliveryFailure, channel_ids
from operators.notifications import synthetic_notification, transition_notification
from operators.outbound import OutboundPolicy
from operators.resilience import Backoff, call_with_retry
from operators.sqlite_store import open_database
from operators.subscriptions import Selector, Subscription, SubscriptionStore

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600.0  # how often submit() drops old finished deliveries (at most; also at every start)
MAX_LISTED_DELIVERIES = 500

DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]


@dataclass(frozen=True)
class PendingDelivery:
    subscription_id: str
    channel: str
    notification: Notification
    attempts: int


class DeliveryJournal:
    """One row per (subscription, notification, channel): what is pending, delivered, dead-lettered or cancelled."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_database(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS notification_deliveries ("
            " subscription_id TEXT NOT NULL, notification_id TEXT NOT NULL, channel TEXT NOT NULL,"
            " payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT 'pending',"
            " last_error TEXT, updated_at REAL NOT NULL, PRIMARY KEY (subscription_id, notification_id, channel))"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS notification_deliveries_by_time ON notification_deliveries (updated_at)"
        )
        self._adopt_alert_deliveries()

    def _adopt_alert_deliveries(self) -> None:
        """A journal of the version that delivered alerts (table ``deliveries``): its pending webhook deliveries
        become one-alert notifications, so an upgrade loses none; its finished ones are dropped."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "deliveries" not in tables:
            return
        rows = self._db.execute(
            "SELECT subscription_id, payload, attempts FROM deliveries WHERE outcome = 'pending' ORDER BY rowid"
        ).fetchall()
        for subscription_id, payload, attempts in rows:
            notification = transition_notification(decode(Alert, payload))
            if self.add(subscription_id, WEBHOOK_CHANNEL, notification):
                self.record(subscription_id, WEBHOOK_CHANNEL, notification.notification_id, attempts, "pending", None)
        self._db.execute("DROP TABLE deliveries")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, subscription_id: str, channel: str, notification: Notification) -> bool:
        """Records a delivery to make; False when it was already recorded (for this subscription and channel)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO notification_deliveries"
                " (subscription_id, notification_id, channel, payload, updated_at) VALUES (?, ?, ?, ?, ?)",
                (subscription_id, notification.notification_id, channel, notification.to_json().decode(), time.time()),
            )
        return cursor.rowcount > 0

    def pending(self) -> list[PendingDelivery]:
        """Every delivery not finished yet, in the order they were recorded."""
        with self._lock:
            rows = self._db.execute(
                "SELECT subscription_id, channel, payload, attempts FROM notification_deliveries"
                " WHERE outcome = 'pending' ORDER BY rowid"
            ).fetchall()
        return [
            PendingDelivery(subscription_id, channel, decode(Notification, payload), attempts)
            for subscription_id, channel, payload, attempts in rows
        ]

    def record(
        self, subscription_id: str, channel: str, notification_id: str, attempts: int, outcome: str, error: str | None
    ) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE notification_deliveries SET attempts = ?, outcome = ?, last_error = ?, updated_at = ?"
                " WHERE subscription_id = ? AND notification_id = ? AND channel = ?",
                (attempts, outcome, error, time.time(), subscription_id, notification_id, channel),
            )

    def prune(self, finished_before: float) -> int:
        """Drops finished deliveries last updated before ``finished_before`` (epoch seconds); pending ones stay."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM notification_deliveries WHERE outcome != 'pending' AND updated_at < ?", (finished_before,)
            )
        return cursor.rowcount

    def summary(self, subscription_id: str | None = None) -> dict[str, int]:
        """Deliveries by outcome (those still in the journal), plus the attempts they took; of one subscription
        or of all."""
        with self._lock:
            rows = self._db.execute(
                "SELECT outcome, COUNT(*), SUM(attempts) FROM notification_deliveries"
                " WHERE ?1 IS NULL OR subscription_id = ?1 GROUP BY outcome",
                (subscription_id,),
            ).fetchall()
        counts = {"pending": 0, "delivered": 0, "dead_lettered": 0, "cancelled": 0, "attempts": 0}
        for outcome, count, attempts in rows:
            counts[outcome] = count
            counts["attempts"] += attempts or 0
        return counts

    def recent(self, subscription_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest deliveries, most recently updated first: the delivery log."""
        with self._lock:
            rows = self._db.execute(
                "SELECT subscription_id, notification_id, channel, outcome, attempts, last_error, updated_at"
                " FROM notification_deliveries WHERE ?1 IS NULL OR subscription_id = ?1"
                " ORDER BY updated_at DESC, rowid DESC LIMIT ?2",
                (subscription_id, limit),
            ).fetchall()
        names = ("subscription_id", "notification_id", "channel", "outcome", "attempts", "error", "updated_at")
        return [dict(zip(names, row, strict=True)) for row in rows]


class AlertHub:
    """Live fan-out to server-sent-events listeners: alerts by selector, and every AlertEvent (acknowledged,
    suppressed, ...) to those listening for events. A slow listener loses its oldest items."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._listeners: dict[asyncio.Queue[Alert | None], Selector] = {}
        self._event_listeners: set[asyncio.Queue[AlertEvent | None]] = set()
        self.dropped = 0

    def subscribe(self, selector: Selector) -> asyncio.Queue[Alert | None]:
        queue: asyncio.Queue[Alert | None] = asyncio.Queue(self._queue_size)
        self._listeners[queue] = selector
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Alert | None]) -> None:
        self._listeners.pop(queue, None)

    def listen_events(self) -> asyncio.Queue[AlertEvent | None]:
        """A queue of every AlertEvent from now on."""
        queue: asyncio.Queue[AlertEvent | None] = asyncio.Queue(self._queue_size)
        self._event_listeners.add(queue)
        return queue

    def unlisten_events(self, queue: asyncio.Queue[AlertEvent | None]) -> None:
        self._event_listeners.discard(queue)

    def publish(self, alert: Alert) -> int:
        """Hands the alert to every matching listener without waiting; returns how many took it."""
        matching = [queue for queue, selector in list(self._listeners.items()) if selector.matches(alert)]
        for queue in matching:
            self._put(queue, alert)
        return len(matching)

    def publish_event(self, event: AlertEvent) -> int:
        """Hands the event to every event listener without waiting; returns how many took it."""
        listeners = list(self._event_listeners)
        for queue in listeners:
            self._put(queue, event)
        return len(listeners)

    def close(self) -> None:
        """Ends every listener's stream (``None`` is the end marker)."""
        for queue in [*self._listeners, *self._event_listeners]:
            self._put(queue, None)

    def _put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        if queue.full():
            queue.get_nowait()
            self.dropped += 1
        queue.put_nowait(item)


class AlertDispatcher:
    """Delivers notifications to the subscriptions that match them, asynchronously, with bounded concurrency."""

    def __init__(
        self,
        store: SubscriptionStore,
        journal: DeliveryJournal,
        *,
        settings: DeliverySettings,
        dead_letter: DeadLetterSink,
        source_topic: str,
        external_url: str,
        client: httpx.AsyncClient | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        """``outbound`` decides where webhooks and apprise channels may go (default: public addresses only);
        ``external_url`` is the API's address as receivers should link to it (Alertmanager's ``externalURL``)."""
        self._store = store
        self._journal = journal
        self._settings = settings
        self._backoff = Backoff(
            initial_s=settings.backoff_base_s,
            max_s=settings.backoff_max_s,
            jitter=settings.backoff_jitter,
            max_attempts=settings.max_attempts,
        )
        self._dead_letter = dead_letter
        self._source_topic = source_topic
        self._external_url = external_url
        self._client = client
        self._owns_client = client is None
        self._outbound = outbound or OutboundPolicy()
        self._channels: ChannelFactory | None = None
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_per_lane: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._started = False
        self._pruned_at = -math.inf

    async def start(self) -> int:
        """Opens the HTTP client and resumes deliveries a previous run left pending; returns how many."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._settings.timeout_s, follow_redirects=False)
        self._channels = ChannelFactory(
            self._client, self._outbound, timeout_s=self._settings.timeout_s, external_url=self._external_url
        )
        self._started = True
        self._prune_journal()
        pending = self._journal.pending()
        for delivery in pending:
            self._spawn(delivery.subscription_id, delivery.channel, delivery.notification, delivery.attempts)
        return len(pending)

    async def stop(self) -> None:
        """Stops in-flight deliveries (they stay pending in the journal for the next start)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        self._started = False

    def submit(self, notification: Notification) -> int:
        """Queues a delivery per channel of every subscription that takes some of the notification's alerts (with
        only those); never waits. Returns the number queued (a delivery already journalled is not queued twice)."""
        if not self._started:
            raise RuntimeError("AlertDispatcher.start() must run before submit()")
        if time.monotonic() - self._pruned_at > min(self._settings.journal_retention_s, PRUNE_INTERVAL_S):
            self._prune_journal()
        queued = 0
        for subscription in self._store.list():
            selected = subscription.select(notification)
            if selected is not None:
                queued += self._queue(subscription, selected)
        return queued

    def send_test(self, subscription: Subscription) -> tuple[Notification, int]:
        """Queues a synthetic notification (stream ``diffsentry-test``) to every channel of this subscription,
        whatever its selector, through the same journal and retries; returns it and the deliveries queued."""
        if not self._started:
            raise RuntimeError("AlertDispatcher.start() must run before send_test()")
        notification = synthetic_notification()
        return notification, self._queue(subscription, notification)

    async def drain(self) -> None:
        """Waits until every queued delivery has finished (delivered, dead-lettered or cancelled)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def summary(self, subscription_id: str | None = None) -> dict[str, int]:
        return self._journal.summary(subscription_id)

    def deliveries(self, subscription_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self._journal.recent(subscription_id, max(1, min(limit, MAX_LISTED_DELIVERIES)))

    def _queue(self, subscription: Subscription, notification: Notification) -> int:
        queued = 0
        for channel in channel_ids(subscription):
            if self._journal.add(subscription.id, channel, notification):
                self._spawn(subscription.id, channel, notification, 0)
                queued += 1
        return queued

    def _prune_journal(self) -> None:
        self._pruned_at = time.monotonic()
        dropped = self._journal.prune(time.time() - self._settings.journal_retention_s)
        if dropped:
            log.info(
                "dropped %d finished deliveries older than %.0f s from the journal",
                dropped,
                self._settings.journal_retention_s,
            )

    def _spawn(self, subscription_id: str, channel: str, notification: Notification, attempts: int) -> None:
        lane = (subscription_id, channel, notification.group)
        previous = self._last_per_lane.get(lane)
        task = asyncio.create_task(self._deliver(subscription_id, channel, notification, attempts, previous))
        self._tasks.add(task)
        self._last_per_lane[lane] = task

        def _done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._last_per_lane.get(lane) is finished:
                del self._last_per_lane[lane]

        task.add_done_callback(_done)

    async def _deliver(
        self,
        subscription_id: str,
        channel_id: str,
        notification: Notification,
        attempts: int,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome does not matter, only that it went first
        assert self._channels is not None
        channels = self._channels
        kind, description = channel_id, channel_id

        async def attempt() -> bool:
            """One try; False when the subscription or this channel of it is gone or off (nothing to deliver to)."""
            nonlocal attempts, kind, description
            subscription = self._store.get(subscription_id)
            if subscription is None or not subscription.enabled:
                return False
            channel = channels.channel(subscription, channel_id)
            if channel is None:
                return False
            kind, description = channel.kind, channel.description
            attempts += 1
            async with self._slots:
                await channel.send(notification, attempts)
            return True

        def record_retry(failure: Exception, attempt_number: int) -> None:
            record(attempt_number, "pending", str(failure))

        def record(attempts_made: int, outcome: str, error: str | None) -> None:
            key = (subscription_id, channel_id, notification.notification_id)
            self._journal.record(*key, attempts_made, outcome, error)

        try:
            delivered = await call_with_retry(
                attempt,
                self._backoff,
                lambda error: isinstance(error, DeliveryFailure) and error.retryable,
                on_retry=record_retry,
                attempts_made=attempts,
            )
        except DeliveryFailure as failure:
            reason = f"{description} failed after {attempts} attempt(s): {failure}"
            letter = DeadLetter(
                source_topic=self._source_topic,
                key=notification.group,
                reason=f"subscription {subscription_id}: {reason}",
                error_type=f"{kind.capitalize()}DeliveryFailed",
                payload=notification.to_json().decode(),
                created_at=time.time(),
            )
            try:
                await self._dead_letter(letter)
            except Exception:
                # Left pending: the next start tries the channel again rather than losing the notification.
                log.exception("dead-lettering a failed delivery to %s failed; it stays pending", subscription_id)
                record(attempts, "pending", reason)
                return
            log.warning("dead-lettered: %s", letter.reason)
            record(attempts, "dead_lettered", reason)
            return
        if delivered:
            record(attempts, "delivered", None)
        else:
            record(attempts, "cancelled", "subscription, or this channel of it, removed or off")
