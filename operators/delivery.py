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
The journal (the state database) makes delivery at-least-once across restarts and instances: ``start`` resumes
deliveries left pending, and instances sharing a PostgreSQL journal send each delivery once, taking over those of an
instance that died once its claims' lease runs out (:class:`DeliveryJournal`).
Finished deliveries (delivered, dead-lettered, cancelled) leave the journal ``journal_retention_s`` after their last
update, so it does not grow without bound; a notification submitted again after that is delivered again (receivers
dedupe on the ``Idempotency-Key`` header, the notification id).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import delete, func, select, update

from core.contracts import Alert, AlertEvent, DeadLetter, Notification, decode
from core.settings import DeliverySettings
from operators.channels import ChannelFactory, DeliveryFailure, channel_ids
from operators.notifications import synthetic_notification
from operators.outbound import OutboundPolicy
from operators.resilience import Backoff, call_with_retry
from operators.state_db import StateDatabase, notification_deliveries
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


_deliveries = notification_deliveries
_SELECT_PENDING = select(
    _deliveries.c.subscription_id, _deliveries.c.channel, _deliveries.c.payload, _deliveries.c.attempts
)


def _pending(subscription_id: str, channel: str, payload: str, attempts: int) -> PendingDelivery:
    return PendingDelivery(subscription_id, channel, decode(Notification, payload), attempts)


class DeliveryJournal:
    """One row per (subscription, notification, channel): what is pending, delivered, dead-lettered or cancelled,
    and which instance sends it.

    Several instances may share the journal (PostgreSQL): each row is claimed by one ``instance_id`` until its
    ``lease_until``; only the claimer sends it, and :meth:`claim` (run at start and every ``lease_s / 3``) renews this
    instance's leases and takes over pending rows whose lease expired (an instance that died). A new row joins the
    claim of the oldest pending row of its lane (subscription, channel, group) when that is another instance's, so a
    lane is sent by one instance at a time and in order, even while its rows move to another instance."""

    def __init__(self, database: StateDatabase, instance_id: str, lease_s: float) -> None:
        self._database = database
        self.instance_id = instance_id
        self._lease_s = lease_s

    def add(self, subscription_id: str, channel: str, notification: Notification) -> str | None:
        """Records a delivery to make; returns the instance that will send it (this one, or the one whose claim its
        lane is under), or None when it was already recorded (for this subscription and channel)."""
        now = time.time()
        lane = (
            (_deliveries.c.subscription_id == subscription_id)
            & (_deliveries.c.channel == channel)
            & (_deliveries.c.grp == notification.group)
            & (_deliveries.c.outcome == "pending")
        )
        with self._database.transaction() as db:
            oldest = db.execute(
                select(_deliveries.c.claimed_by, _deliveries.c.lease_until)
                .where(lane)
                .order_by(_deliveries.c.seq)
                .limit(1)
            ).one_or_none()
            claimed_by, lease_until = oldest if oldest is not None else (self.instance_id, 0.0)
            if claimed_by == self.instance_id:
                lease_until = now + self._lease_s
            added = self._database.insert_new(
                db,
                self._database.insert(_deliveries).values(
                    subscription_id=subscription_id,
                    notification_id=notification.notification_id,
                    channel=channel,
                    grp=notification.group,
                    payload=notification.to_json().decode(),
                    updated_at=now,
                    claimed_by=claimed_by,
                    lease_until=lease_until,
                ),
            )
        return claimed_by if added else None

    def claim(self, running: Collection[tuple[str, str, str]] = ()) -> list[PendingDelivery]:
        """Renews this instance's leases, takes over the pending deliveries whose lease expired; returns every
        pending delivery this instance now holds, in the order they were recorded, but those ``running`` already
        (keys: subscription, channel, notification id)."""
        now = time.time()
        pending = _deliveries.c.outcome == "pending"
        with self._database.transaction() as db:
            db.execute(
                update(_deliveries)
                .where(pending & ((_deliveries.c.claimed_by == self.instance_id) | (_deliveries.c.lease_until < now)))
                .values(claimed_by=self.instance_id, lease_until=now + self._lease_s)
            )
            rows = db.execute(
                select(_deliveries.c.notification_id, *_SELECT_PENDING.selected_columns)
                .where(pending & (_deliveries.c.claimed_by == self.instance_id))
                .order_by(_deliveries.c.seq)
            ).all()
        return [_pending(*row[1:]) for row in rows if (row[1], row[2], row[0]) not in running]

    def release(self) -> int:
        """Lets another instance take this one's pending deliveries at its next claim (a clean stop)."""
        with self._database.transaction() as db:
            return db.execute(
                update(_deliveries)
                .where((_deliveries.c.outcome == "pending") & (_deliveries.c.claimed_by == self.instance_id))
                .values(lease_until=0.0)
            ).rowcount

    def pending(self) -> list[PendingDelivery]:
        """Every delivery not finished yet, whoever holds it, in the order they were recorded."""
        with self._database.transaction() as db:
            rows = db.execute(_SELECT_PENDING.where(_deliveries.c.outcome == "pending").order_by(_deliveries.c.seq))
            return [_pending(*row) for row in rows]

    def record(
        self, subscription_id: str, channel: str, notification_id: str, attempts: int, outcome: str, error: str | None
    ) -> bool:
        """Records an attempt's outcome; False when this instance no longer holds the delivery (another took it
        over after this one's lease expired: its outcome counts, not this one's)."""
        with self._database.transaction() as db:
            return (
                db.execute(
                    update(_deliveries)
                    .where(
                        (_deliveries.c.subscription_id == subscription_id)
                        & (_deliveries.c.notification_id == notification_id)
                        & (_deliveries.c.channel == channel)
                        & (_deliveries.c.claimed_by == self.instance_id)
                    )
                    .values(attempts=attempts, outcome=outcome, last_error=error, updated_at=time.time())
                ).rowcount
                > 0
            )

    def prune(self, finished_before: float) -> int:
        """Drops finished deliveries last updated before ``finished_before`` (epoch seconds); pending ones stay."""
        with self._database.transaction() as db:
            return db.execute(
                delete(_deliveries).where(
                    (_deliveries.c.outcome != "pending") & (_deliveries.c.updated_at < finished_before)
                )
            ).rowcount

    def summary(self, subscription_id: str | None = None) -> dict[str, int]:
        """Deliveries by outcome (those still in the journal), plus the attempts they took; of one subscription
        or of all."""
        query = select(_deliveries.c.outcome, func.count(), func.sum(_deliveries.c.attempts)).group_by(
            _deliveries.c.outcome
        )
        if subscription_id is not None:
            query = query.where(_deliveries.c.subscription_id == subscription_id)
        with self._database.transaction() as db:
            rows = db.execute(query).all()
        counts = {"pending": 0, "delivered": 0, "dead_lettered": 0, "cancelled": 0, "attempts": 0}
        for outcome, count, attempts in rows:
            counts[outcome] = count
            counts["attempts"] += attempts or 0
        return counts

    def recent(self, subscription_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The latest deliveries, most recently updated first: the delivery log."""
        c = _deliveries.c
        query = select(
            c.subscription_id, c.notification_id, c.channel, c.outcome, c.attempts, c.last_error, c.updated_at
        ).order_by(c.updated_at.desc(), c.seq.desc())
        if subscription_id is not None:
            query = query.where(c.subscription_id == subscription_id)
        with self._database.transaction() as db:
            rows = db.execute(query.limit(limit)).all()
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
        self._in_flight: set[tuple[str, str, str]] = set()  # (subscription, channel, notification id)
        self._claimer: asyncio.Task[None] | None = None
        self._started = False
        self._pruned_at = -math.inf

    async def start(self) -> int:
        """Opens the HTTP client, resumes the deliveries this instance holds (a previous run's included) and those
        of instances whose lease expired, then keeps claiming every ``claim_lease_s / 3``; returns how many."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._settings.timeout_s, follow_redirects=False)
        self._channels = ChannelFactory(
            self._client, self._outbound, timeout_s=self._settings.timeout_s, external_url=self._external_url
        )
        self._started = True
        self._prune_journal()
        resumed = self._claim()
        self._claimer = asyncio.create_task(self._claim_forever(), name="delivery-claims")
        return resumed

    def _claim(self) -> int:
        """Spawns the held deliveries not running here yet; returns how many."""
        held = self._journal.claim(running=self._in_flight)
        for delivery in held:
            self._spawn(delivery.subscription_id, delivery.channel, delivery.notification, delivery.attempts)
        return len(held)

    async def _claim_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.claim_lease_s / 3)
            try:
                taken = self._claim()
            except Exception:  # the database away for a moment: the next round tries again, leases permitting
                log.exception("claiming deliveries failed")
                continue
            if taken:
                log.info("took over %d pending deliveries", taken)

    async def stop(self) -> None:
        """Stops in-flight deliveries; they stay pending in the journal, released for another instance to take at
        once (or this one at its next start)."""
        if self._claimer is not None:
            self._claimer.cancel()
            await asyncio.gather(self._claimer, return_exceptions=True)
            self._claimer = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._journal.release()
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
            sender = self._journal.add(subscription.id, channel, notification)
            if sender is None:
                continue
            queued += 1
            if sender == self._journal.instance_id:  # else its lane is another instance's: that one sends it
                self._spawn(subscription.id, channel, notification, 0)
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
        key = (subscription_id, channel, notification.notification_id)
        previous = self._last_per_lane.get(lane)
        task = asyncio.create_task(self._deliver(subscription_id, channel, notification, attempts, previous))
        self._tasks.add(task)
        self._in_flight.add(key)
        self._last_per_lane[lane] = task

        def _done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._in_flight.discard(key)
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
                # Left pending: the next claim round tries the channel again rather than losing the notification.
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
