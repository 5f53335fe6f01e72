"""Alert delivery: signed webhooks with retries and a dead-letter topic, and a live fan-out for SSE listeners.

``AlertDispatcher.submit`` only writes a journal row per matching webhook and starts a task, so the scoring path
never waits on a subscriber. Deliveries to one subscription about one stream go out in order (a resolve never
overtakes its firing, even across retries); everything else runs concurrently, at most ``concurrency`` requests.
Each delivery is tried until it succeeds, fails permanently (a 4xx other than 408/425/429) or runs out of
attempts (``operators.resilience``: exponential backoff with jitter, ``max_attempts``); then it goes to the
dead-letter sink. Every attempt first passes the outbound policy (``operators/outbound.py``: where webhooks may go)
and goes to the address it checked; redirects are not followed.
The journal (sqlite) makes delivery at-least-once across restarts: ``start`` resumes deliveries left pending.
Finished deliveries (delivered, dead-lettered, cancelled) leave the journal ``journal_retention_s`` after their last
update, so it does not grow without bound; a transition re-read after that is delivered again (receivers dedupe on
the ``Idempotency-Key`` header).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from core.contracts import Alert, DeadLetter, decode
from core.settings import DeliverySettings
from operators.alerting import idempotency_key
from operators.outbound import BlockedTarget, OutboundPolicy, redact_url
from operators.resilience import Backoff, call_with_retry
from operators.sqlite_store import open_database
from operators.subscriptions import Selector, SubscriptionStore

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-DiffSentry-Signature"
TIMESTAMP_HEADER = "X-DiffSentry-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-DiffSentry-Attempt"
EVENT_HEADER = "X-DiffSentry-Event"

PRUNE_INTERVAL_S = 3600.0  # how often submit() drops old finished deliveries (at most; also at every start)

# Statuses worth another try: the receiver is overloaded, timed out or not ready; any other 4xx will not change.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters, which any client can put in a header.
    if header is None:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode(errors="surrogatepass"))


class DeliveryJournal:
    """One row per (subscription, alert transition): what is pending, delivered, dead-lettered or cancelled."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_database(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS deliveries ("
            " subscription_id TEXT NOT NULL, idempotency_key TEXT NOT NULL, payload TEXT NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0, outcome TEXT NOT NULL DEFAULT 'pending', last_error TEXT,"
            " updated_at REAL NOT NULL, PRIMARY KEY (subscription_id, idempotency_key))"
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, subscription_id: str, alert: Alert) -> bool:
        """Records a delivery to make; False when this transition was already recorded for this subscription."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO deliveries (subscription_id, idempotency_key, payload, updated_at)"
                " VALUES (?, ?, ?, ?)",
                (subscription_id, idempotency_key(alert), alert.to_json().decode(), time.time()),
            )
        return cursor.rowcount > 0

    def pending(self) -> list[tuple[str, Alert, int]]:
        """(subscription id, alert, attempts made) of every delivery not finished yet."""
        with self._lock:
            rows = self._db.execute(
                "SELECT subscription_id, payload, attempts FROM deliveries WHERE outcome = 'pending' ORDER BY rowid"
            ).fetchall()
        return [(subscription_id, decode(Alert, payload), attempts) for subscription_id, payload, attempts in rows]

    def record(self, subscription_id: str, alert: Alert, attempts: int, outcome: str, error: str | None) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET attempts = ?, outcome = ?, last_error = ?, updated_at = ?"
                " WHERE subscription_id = ? AND idempotency_key = ?",
                (attempts, outcome, error, time.time(), subscription_id, idempotency_key(alert)),
            )

    def prune(self, finished_before: float) -> int:
        """Drops finished deliveries last updated before ``finished_before`` (epoch seconds); pending ones stay."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM deliveries WHERE outcome != 'pending' AND updated_at < ?", (finished_before,)
            )
        return cursor.rowcount

    def summary(self) -> dict[str, int]:
        """Deliveries by outcome (those still in the journal), plus the HTTP attempts they took."""
        with self._lock:
            rows = self._db.execute(
                "SELECT outcome, COUNT(*), SUM(attempts) FROM deliveries GROUP BY outcome"
            ).fetchall()
        counts = {"pending": 0, "delivered": 0, "dead_lettered": 0, "cancelled": 0, "attempts": 0}
        for outcome, count, attempts in rows:
            counts[outcome] = count
            counts["attempts"] += attempts or 0
        return counts


class AlertHub:
    """Live fan-out of alerts to server-sent-events listeners; a slow listener loses its oldest alerts."""

    def __init__(self, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._listeners: dict[asyncio.Queue[Alert | None], Selector] = {}
        self.dropped = 0

    def subscribe(self, selector: Selector) -> asyncio.Queue[Alert | None]:
        queue: asyncio.Queue[Alert | None] = asyncio.Queue(self._queue_size)
        self._listeners[queue] = selector
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Alert | None]) -> None:
        self._listeners.pop(queue, None)

    def publish(self, alert: Alert) -> int:
        """Hands the alert to every matching listener without waiting; returns how many took it."""
        delivered = 0
        for queue, selector in list(self._listeners.items()):
            if not selector.matches(alert):
                continue
            if queue.full():
                queue.get_nowait()
                self.dropped += 1
            queue.put_nowait(alert)
            delivered += 1
        return delivered

    def close(self) -> None:
        """Ends every listener's stream (``None`` is the end marker)."""
        for queue in list(self._listeners):
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)


class _Failure(Exception):
    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


class AlertDispatcher:
    """Delivers alert transitions to the subscriptions that match them, asynchronously, with bounded concurrency."""

    def __init__(
        self,
        store: SubscriptionStore,
        journal: DeliveryJournal,
        *,
        settings: DeliverySettings,
        dead_letter: DeadLetterSink,
        source_topic: str,
        hub: AlertHub | None = None,
        client: httpx.AsyncClient | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        """``outbound`` decides where webhooks may go (default: public addresses only)."""
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
        self.hub = hub
        self._client = client
        self._owns_client = client is None
        self._outbound = outbound or OutboundPolicy()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_per_lane: dict[tuple[str, str, str], asyncio.Task[None]] = {}
        self._started = False
        self._pruned_at = -math.inf

    async def start(self) -> int:
        """Opens the HTTP client and resumes deliveries a previous run left pending; returns how many."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._settings.timeout_s, follow_redirects=False)
        self._started = True
        self._prune_journal()
        pending = self._journal.pending()
        for subscription_id, alert, attempts in pending:
            self._spawn(subscription_id, alert, attempts)
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

    def submit(self, alert: Alert) -> int:
        """Publishes to SSE listeners and queues a webhook delivery per matching subscription; never waits.

        Returns the number of webhook deliveries queued (a transition already journalled is not queued twice).
        """
        if not self._started:
            raise RuntimeError("AlertDispatcher.start() must run before submit()")
        if self.hub is not None:
            self.hub.publish(alert)
        if time.monotonic() - self._pruned_at > min(self._settings.journal_retention_s, PRUNE_INTERVAL_S):
            self._prune_journal()
        queued = 0
        for subscription in self._store.matching(alert):
            if subscription.delivery.webhook_url is not None and self._journal.add(subscription.id, alert):
                self._spawn(subscription.id, alert, 0)
                queued += 1
        return queued

    async def drain(self) -> None:
        """Waits until every queued delivery has finished (delivered, dead-lettered or cancelled)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def summary(self) -> dict[str, int]:
        return self._journal.summary()

    def _prune_journal(self) -> None:
        self._pruned_at = time.monotonic()
        dropped = self._journal.prune(time.time() - self._settings.journal_retention_s)
        if dropped:
            log.info(
                "dropped %d finished deliveries older than %.0f s from the journal",
                dropped,
                self._settings.journal_retention_s,
            )

    def _spawn(self, subscription_id: str, alert: Alert, attempts: int) -> None:
        lane = (subscription_id, alert.modality, alert.stream)
        previous = self._last_per_lane.get(lane)
        task = asyncio.create_task(self._deliver(subscription_id, alert, attempts, previous))
        self._tasks.add(task)
        self._last_per_lane[lane] = task

        def _done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self._last_per_lane.get(lane) is finished:
                del self._last_per_lane[lane]

        task.add_done_callback(_done)

    async def _deliver(
        self, subscription_id: str, alert: Alert, attempts: int, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # its outcome does not matter, only that it went first
        body = alert.to_json()
        url = ""

        async def attempt() -> bool:
            """One try; False when the subscription is gone or off (nothing to deliver to)."""
            nonlocal attempts, url
            subscription = self._store.get(subscription_id)
            if subscription is None or not subscription.enabled or subscription.delivery.webhook_url is None:
                return False
            url = str(subscription.delivery.webhook_url)
            attempts += 1
            async with self._slots:
                await self._post(url, body, subscription.secret or "", alert, attempts)
            return True

        def record_retry(failure: Exception, attempt_number: int) -> None:
            self._journal.record(subscription_id, alert, attempt_number, "pending", str(failure))

        try:
            delivered = await call_with_retry(
                attempt,
                self._backoff,
                lambda error: isinstance(error, _Failure) and error.retryable,
                on_retry=record_retry,
                attempts_made=attempts,
            )
        except _Failure as failure:
            reason = f"webhook {redact_url(url)} failed after {attempts} attempt(s): {failure}"
            await self._to_dead_letter(subscription_id, alert, attempts, reason)
            return
        if delivered:
            self._journal.record(subscription_id, alert, attempts, "delivered", None)
        else:
            self._journal.record(subscription_id, alert, attempts, "cancelled", "subscription removed or off")

    async def _post(self, url: str, body: bytes, secret: str, alert: Alert, attempt: int) -> None:
        assert self._client is not None
        try:
            target = await self._outbound.resolve(url)  # checked again at every attempt: DNS answers change
        except BlockedTarget as error:
            raise _Failure(f"refused by the outbound policy: {error}", retryable=False) from error
        except OSError as error:
            raise _Failure(f"cannot resolve the host: {error}", retryable=True) from error
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body),
            TIMESTAMP_HEADER: str(int(time.time())),
            IDEMPOTENCY_HEADER: idempotency_key(alert),
            ATTEMPT_HEADER: str(attempt),
            EVENT_HEADER: f"alert.{alert.state}",
        }
        try:
            response = await self._client.post(
                target.url,
                content=body,
                headers=headers,
                timeout=self._settings.timeout_s,
                follow_redirects=False,  # a redirect could lead anywhere, past the policy
                extensions={"sni_hostname": target.server_name},
            )
        except httpx.TimeoutException as error:
            raise _Failure(f"timed out ({type(error).__name__})", retryable=True) from error
        except httpx.TransportError as error:
            raise _Failure(f"{type(error).__name__}: {error}", retryable=True) from error
        if response.is_success:
            return
        if response.is_redirect:
            raise _Failure(f"HTTP {response.status_code}: redirects are not followed", retryable=False)
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES
        raise _Failure(f"HTTP {response.status_code}", retryable=retryable)

    async def _to_dead_letter(self, subscription_id: str, alert: Alert, attempts: int, reason: str) -> None:
        letter = DeadLetter(
            source_topic=self._source_topic,
            key=alert.stream,
            reason=f"subscription {subscription_id}: {reason}",
            error_type="WebhookDeliveryFailed",
            payload=alert.to_json().decode(),
            created_at=time.time(),
        )
        try:
            await self._dead_letter(letter)
        except Exception:
            # Left pending: the next start tries the webhook again rather than losing the alert.
            log.exception("dead-lettering a failed delivery to %s failed; it stays pending", subscription_id)
            self._journal.record(subscription_id, alert, attempts, "pending", reason)
            return
        log.warning("dead-lettered: %s", letter.reason)
        self._journal.record(subscription_id, alert, attempts, "dead_lettered", reason)
