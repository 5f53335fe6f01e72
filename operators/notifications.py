"""Building notifications: their deterministic ids, and the one-alert notification of a single transition.

``notification_id`` follows docs/design/console-and-alert-lifecycle.md: ``"nt-"`` and the first 20 hex digits of
the SHA-256 of the group, the reason, the sorted idempotency keys of the member transitions and an extra part
(a repeat's or an acknowledgement expiry's sequence), so a notification computed again has the same id.
"""

from __future__ import annotations

import hashlib
import time
import uuid

from core.contracts import Alert, Notification, NotificationReason
from operators.alerting import idempotency_key, stream_key

TEST_STREAM = "diffsentry-test"


def notification_id(group: str, reason: NotificationReason, alerts: list[Alert], extra: str = "") -> str:
    keys = sorted(idempotency_key(alert) for alert in alerts)
    digest = hashlib.sha256("|".join([group, reason, *keys, extra]).encode()).hexdigest()
    return "nt-" + digest[:20]


def stream_group(alert: Alert) -> str:
    """The group of a stream that belongs to no configured group: the stream itself, by modality."""
    return stream_key(alert.modality, alert.stream)


def transition_notification(alert: Alert, created_at: float | None = None) -> Notification:
    """One alert transition as a notification of its own (its stream is the group)."""
    group = stream_group(alert)
    return Notification(
        notification_id=notification_id(group, "transition", [alert]),
        group=group,
        reason="transition",
        alerts=[alert],
        created_at=time.time() if created_at is None else created_at,
    )


def synthetic_notification(now: float | None = None) -> Notification:
    """A synthetic firing alert on stream ``diffsentry-test``, new at every call: what a test-send delivers."""
    now = time.time() if now is None else now
    alert = Alert(
        alert_id="al-test-" + uuid.uuid4().hex[:16],
        modality="sensor",
        stream=TEST_STREAM,
        state="firing",
        severity="warning",
        started_at=now,
        event_time=now,
        score=1.0,
        threshold=1.0,
        model="diffsentry-test",
        top_channels=[],
    )
    return transition_notification(alert, now)
