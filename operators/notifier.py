"""From alert transitions to notifications, in wall-clock time, as Prometheus Alertmanager does it.

- Every transition is handled once (``operators.alerting.idempotency_key``): a re-delivery after a restart
  changes nothing. It becomes an event (fired / escalated / resolved) in the LifecycleStore.
- A transition that matches an active silence or maintenance window is recorded with a "suppressed" event and not
  delivered (its resolve neither). Escalations of an acknowledged alert are not delivered; its resolve is.
- Delivered transitions wait ``group_wait_s`` in their group (the first of ``alerting.groups`` whose selector takes
  the stream, else the stream itself), then go out as ONE Notification to the sink.
- ``tick`` (called about every second) flushes groups, announces silence expiry, expires acknowledgements (a still
  firing alert notifies again, reason "ack_expired"), repeats still-firing, unacknowledged, unsilenced alerts after
  ``repeat_interval_s`` (reason "repeat"), and notifies alerts that fired while silenced once nothing silences them.

Every event is stored, returned to the caller and passed to ``on_events`` (the service publishes from there, so
events made by API calls reach the alerts topic too). Pending notifications are stored, so a restart within
``group_wait_s`` loses nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Literal, Protocol

from core.contracts import Alert, AlertEvent, AlertEventKind, Notification, NotificationReason
from core.settings import AlertingSettings
from operators.alerting import idempotency_key
from operators.lifecycle import (
    Acknowledgement,
    AlertStatus,
    AlertView,
    LifecycleStore,
    MaintenanceWindow,
    MaintenanceWindowSpec,
    PendingTransition,
    RegistryEntry,
    Silence,
    SilenceSpec,
)
from operators.notifications import notification_id, stream_group

EventListener = Callable[[list[AlertEvent]], None]
Rule = Silence | MaintenanceWindow


class NotificationSink(Protocol):
    def submit(self, notification: Notification) -> int:
        """Queues the notification for every matching subscriber; returns how many deliveries it queued."""
        ...


class UnknownAlert(LookupError):
    """No transition of this alert was ever handled."""


class AlertAlreadyResolved(Exception):
    """A resolved alert cannot be acknowledged."""


def _event_id(kind: AlertEventKind, subject: str) -> str:
    return "ev-" + hashlib.sha256(f"{kind}|{subject}".encode()).hexdigest()[:20]


class Notifier:
    def __init__(
        self,
        settings: AlertingSettings,
        store: LifecycleStore,
        sink: NotificationSink,
        clock: Callable[[], float] = time.time,
        *,
        on_events: EventListener | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._sink = sink
        self._clock = clock
        self._on_events = on_events

    def now(self) -> float:
        return self._clock()

    def group_of(self, alert: Alert) -> str:
        for group in self.settings.groups:
            if fnmatch.fnmatchcase(alert.stream, group.stream) and group.modality in (None, alert.modality):
                return group.name
        return stream_group(alert)

    # transitions and timers
    def handle(self, alert: Alert) -> list[AlertEvent]:
        now = self._clock()
        key = idempotency_key(alert)
        with self._store.transaction():
            if not self._store.mark_handled(key, now):
                return []
            entry = self._store.entry(alert.alert_id)
            kind: AlertEventKind = "resolved" if alert.state == "resolved" else "fired"
            if kind == "fired" and entry is not None and entry.alert.state == "firing":
                kind = "escalated"
            self._store.record_transition(alert, now)
            events = [self._alert_event(kind, alert, now, subject=key)]
            silenced_by = self._silenced_by(alert, self._rules(), now)
            if silenced_by:
                events.append(self._alert_event("suppressed", alert, now, subject=key, ref=",".join(silenced_by)))
            elif kind != "escalated" or self._store.acknowledgement(alert.alert_id) is None:
                self._store.add_pending(PendingTransition(self.group_of(alert), alert, now))
            self._flush(now)
            stored = self._store.append_events(events)
        return self._emit(stored)

    def tick(self, now: float | None = None) -> list[AlertEvent]:
        now = self._clock() if now is None else now
        with self._store.transaction():
            rules = self._rules()
            events = self._expire_silences(now)
            events += self._expire_acknowledgements(rules, now)
            events += self._repeat(rules, now)
            self._flush(now)
            stored = self._store.append_events(events)
        return self._emit(stored)

    def _expire_silences(self, now: float) -> list[AlertEvent]:
        events = []
        for silence in self._store.unannounced_expired_silences(now):
            self._store.announce_silence_expiry(silence.id)
            events.append(self._silence_event("silence_expired", silence, now, actor="system"))
        return events

    def _expire_acknowledgements(self, rules: list[Rule], now: float) -> list[AlertEvent]:
        events, due = [], dict[str, list[tuple[Alert, float]]]()
        for ack in self._store.acknowledgements():
            if ack.expires_at is None or ack.expires_at > now:
                continue
            self._store.delete_acknowledgement(ack.alert_id)
            entry = self._store.entry(ack.alert_id)
            if entry is None or entry.alert.state != "firing":
                continue  # it resolved while acknowledged: nothing to re-notify
            subject = f"{ack.alert_id}@{ack.expires_at!r}"
            events.append(self._alert_event("ack_expired", entry.alert, now, subject=subject, until=ack.expires_at))
            if not self._silenced_by(entry.alert, rules, now):
                due.setdefault(self.group_of(entry.alert), []).append((entry.alert, ack.expires_at))
        for group, members in due.items():
            expiries = ",".join(sorted(f"{alert.alert_id}@{expiry!r}" for alert, expiry in members))
            self._notify(group, "ack_expired", [alert for alert, _ in members], now, extra=expiries)
        return events

    def _repeat(self, rules: list[Rule], now: float) -> list[AlertEvent]:
        """Repeats of alerts still firing, and first notifications of those that fired while silenced."""
        waiting = {pending.alert.alert_id for pending in self._store.pending()}
        due: dict[str, list[RegistryEntry]] = {}
        for entry in self._store.entries(firing_only=True):
            alert = entry.alert
            if (
                alert.alert_id in waiting
                or self._store.acknowledgement(alert.alert_id) is not None
                or self._silenced_by(alert, rules, now)
            ):
                continue
            if entry.notified_at is None:  # suppressed until now
                self._store.add_pending(PendingTransition(self.group_of(alert), alert, now))
            elif (
                self.settings.repeat_interval_s is not None
                and now - entry.notified_at >= self.settings.repeat_interval_s
            ):
                due.setdefault(self.group_of(alert), []).append(entry)
        events = []
        for group, entries in due.items():
            sequence = ",".join(sorted(f"{entry.alert.alert_id}#{entry.repeat_count + 1}" for entry in entries))
            sent = self._notify(group, "repeat", [entry.alert for entry in entries], now, extra=sequence)
            for entry in entries:
                subject = f"{entry.alert.alert_id}#{entry.repeat_count + 1}"
                events.append(
                    self._alert_event("repeated", entry.alert, now, subject=subject, ref=sent.notification_id)
                )
        return events

    def _flush(self, now: float) -> None:
        """Sends every group whose first waiting transition has waited ``group_wait_s``."""
        groups: dict[str, list[PendingTransition]] = {}
        for pending in self._store.pending():
            groups.setdefault(pending.group, []).append(pending)
        rules: list[Rule] | None = None
        for group, members in groups.items():
            if min(member.since for member in members) + self.settings.group_wait_s > now:
                continue
            rules = self._rules() if rules is None else rules
            self._store.remove_pending([member.alert.alert_id for member in members])
            # A silence or window that began while they waited takes them too.
            alerts = [member.alert for member in members if not self._silenced_by(member.alert, rules, now)]
            if alerts:
                self._notify(group, "transition", alerts, now)

    def _notify(
        self, group: str, reason: NotificationReason, alerts: list[Alert], now: float, extra: str = ""
    ) -> Notification:
        notification = Notification(
            notification_id=notification_id(group, reason, alerts, extra),
            group=group,
            reason=reason,
            alerts=alerts,
            created_at=now,
        )
        self._sink.submit(notification)
        for alert in alerts:
            self._store.mark_notified(alert.alert_id, now, repeat=reason == "repeat")
        return notification

    # what operators do
    def acknowledge(self, alert_id: str, by: str, comment: str = "", expires_in_s: float | None = None) -> AlertView:
        """ValueError for a bad expiry or actor, UnknownAlert, AlertAlreadyResolved."""
        if expires_in_s is not None and not expires_in_s > 0:
            raise ValueError("expires_in_s must be more than 0")
        now = self._clock()
        with self._store.transaction():
            entry = self._firing(alert_id)
            expires_at = None if expires_in_s is None else now + expires_in_s
            ack = Acknowledgement(alert_id=alert_id, by=by, at=now, comment=comment, expires_at=expires_at)
            self._store.save_acknowledgement(ack)
            event = self._alert_event(
                "acknowledged", entry.alert, now, subject=f"{alert_id}@{now!r}", actor=by, comment=comment,
                until=expires_at,
            )  # fmt: skip
            stored = self._store.append_events([event])
        self._emit(stored)
        return self._view(entry, self._rules(), now)

    def unacknowledge(self, alert_id: str, by: str) -> AlertView:
        now = self._clock()
        with self._store.transaction():
            entry = self._store.entry(alert_id)
            if entry is None:
                raise UnknownAlert(alert_id)
            stored = []
            if self._store.delete_acknowledgement(alert_id):
                event = self._alert_event("unacknowledged", entry.alert, now, subject=f"{alert_id}@{now!r}", actor=by)
                stored = self._store.append_events([event])
        self._emit(stored)
        return self._view(entry, self._rules(), now)

    def create_silence(self, spec: SilenceSpec) -> Silence:
        now = self._clock()
        starts_at = now if spec.starts_at is None else spec.starts_at
        if spec.ends_at <= max(starts_at, now):
            raise ValueError("ends_at must be in the future and after starts_at")
        silence = Silence(
            **spec.model_dump(exclude={"starts_at"}), starts_at=starts_at, id="si-" + uuid.uuid4().hex[:16],
            created_at=now,
        )  # fmt: skip
        with self._store.transaction():
            self._store.save_silence(silence)
            stored = self._store.append_events(
                [self._silence_event("silence_created", silence, now, actor=silence.created_by)]
            )
        self._emit(stored)
        return silence

    def expire_silence(self, silence_id: str, by: str) -> Silence | None:
        """Ends a silence now (kept in history); None if there is no such silence. Ending an ended one does nothing."""
        now = self._clock()
        with self._store.transaction():
            silence = self._store.silence(silence_id)
            if silence is None or silence.state_at(now) == "expired":
                return silence
            silence = silence.model_copy(update={"starts_at": min(silence.starts_at, now), "ends_at": now})
            self._store.save_silence(silence)
            self._store.announce_silence_expiry(silence_id)
            stored = self._store.append_events([self._silence_event("silence_expired", silence, now, actor=by)])
        self._emit(stored)
        return silence

    def silences(self) -> list[Silence]:
        return self._store.silences()

    def create_maintenance_window(self, spec: MaintenanceWindowSpec) -> MaintenanceWindow:
        now = self._clock()
        window = MaintenanceWindow(**spec.model_dump(), id="mw-" + uuid.uuid4().hex[:16], created_at=now)
        event = AlertEvent(
            event_id=_event_id("maintenance_window_created", window.id), kind="maintenance_window_created", at=now,
            actor=window.created_by, comment=window.comment, ref=window.id,
        )  # fmt: skip
        with self._store.transaction():
            self._store.save_window(window)
            stored = self._store.append_events([event])
        self._emit(stored)
        return window

    def delete_maintenance_window(self, window_id: str, by: str) -> bool:
        now = self._clock()
        event = AlertEvent(
            event_id=_event_id("maintenance_window_deleted", window_id), kind="maintenance_window_deleted", at=now,
            actor=by, ref=window_id,
        )  # fmt: skip
        with self._store.transaction():
            if not self._store.delete_window(window_id):
                return False
            stored = self._store.append_events([event])
        self._emit(stored)
        return True

    def maintenance_windows(self) -> list[MaintenanceWindow]:
        return self._store.windows()

    # what operators see
    def views(self, status: Literal["active", "all"] = "active", limit: int = 100) -> list[AlertView]:
        """Alerts newest first: the firing ones ("active") or all."""
        now, rules = self._clock(), self._rules()
        return [
            self._view(entry, rules, now) for entry in self._store.entries(firing_only=status == "active", limit=limit)
        ]

    def view(self, alert_id: str) -> AlertView | None:
        entry = self._store.entry(alert_id)
        return None if entry is None else self._view(entry, self._rules(), self._clock())

    def status(self, alert_id: str) -> AlertStatus | None:
        view = self.view(alert_id)
        return None if view is None else view.status

    def events(self, *, since: float | None = None, alert_id: str | None = None, limit: int = 100) -> list[AlertEvent]:
        return self._store.events(since=since, alert_id=alert_id, limit=limit)

    # helpers
    def _firing(self, alert_id: str) -> RegistryEntry:
        entry = self._store.entry(alert_id)
        if entry is None:
            raise UnknownAlert(alert_id)
        if entry.alert.state == "resolved":
            raise AlertAlreadyResolved(alert_id)
        return entry

    def _rules(self) -> list[Rule]:
        return [*self._store.silences(), *self._store.windows()]

    @staticmethod
    def _silenced_by(alert: Alert, rules: list[Rule], now: float) -> list[str]:
        return [rule.id for rule in rules if rule.silences(alert, now)]

    def _view(self, entry: RegistryEntry, rules: list[Rule], now: float) -> AlertView:
        alert = entry.alert
        ack = self._store.acknowledgement(alert.alert_id)
        silenced_by = self._silenced_by(alert, rules, now) if alert.state == "firing" else []
        status: AlertStatus = "resolved" if alert.state == "resolved" else "firing"
        if status == "firing" and ack is not None:
            status = "acknowledged"
        elif status == "firing" and silenced_by:
            status = "silenced"
        fields = alert.model_dump(exclude={"version"})
        return AlertView(**fields, status=status, acknowledgement=ack, silenced_by=silenced_by)

    def _alert_event(
        self,
        kind: AlertEventKind,
        alert: Alert,
        now: float,
        *,
        subject: str,
        actor: str = "system",
        comment: str = "",
        ref: str | None = None,
        until: float | None = None,
    ) -> AlertEvent:
        return AlertEvent(
            event_id=_event_id(kind, subject), kind=kind, at=now, alert_id=alert.alert_id, modality=alert.modality,
            stream=alert.stream, actor=actor, comment=comment, ref=ref, until=until,
        )  # fmt: skip

    @staticmethod
    def _silence_event(kind: AlertEventKind, silence: Silence, now: float, *, actor: str) -> AlertEvent:
        return AlertEvent(
            event_id=_event_id(kind, silence.id), kind=kind, at=now, actor=actor, comment=silence.comment,
            ref=silence.id, until=silence.ends_at,
        )  # fmt: skip

    def _emit(self, events: list[AlertEvent]) -> list[AlertEvent]:
        if events and self._on_events is not None:
            self._on_events(events)
        return events
