"""What operators do about alerts, and what became of each alert: silences, maintenance windows,
acknowledgements, the alert registry and the AlertEvent log, kept durably in the state database (shared by the
instances that share it).

All times here are wall-clock seconds since the epoch (the Notifier's clock), not event time: a silence for "the
next two hours" means the operator's next two hours, whatever the event times of replayed scores are.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Executable, Row, delete, insert, select, update

from core.contracts import Alert, AlertEvent, EventTime, Location, Modality, Severity, decode
from operators.state_db import (
    StateDatabase,
    acknowledgements,
    alert_events,
    alert_registry,
    handled_transitions,
    maintenance_windows,
    pending_notifications,
    silences,
)

SilenceState = Literal["pending", "active", "expired"]
AlertStatus = Literal["firing", "acknowledged", "silenced", "resolved"]
_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class Matchers(BaseModel):
    """Which alerts: shell-style globs on the stream and the model, a modality and a severity (None: any)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stream: str = Field(default="*", min_length=1, max_length=200)
    modality: Modality | None = None
    severity: Severity | None = None
    model: str = Field(default="*", min_length=1, max_length=200)

    def matches(self, alert: Alert) -> bool:
        return (
            fnmatch.fnmatchcase(alert.stream, self.stream)
            and fnmatch.fnmatchcase(alert.model, self.model)
            and (self.modality is None or self.modality == alert.modality)
            and (self.severity is None or self.severity == alert.severity)
        )


class SilenceSpec(BaseModel):
    """What a client sends to create a silence: it always has an end."""

    model_config = ConfigDict(extra="forbid")
    matchers: Matchers = Field(default_factory=Matchers)
    starts_at: EventTime | None = None  # None: now
    ends_at: EventTime
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _ends_after_start(self) -> SilenceSpec:
        if self.starts_at is not None and self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        return self


class Silence(SilenceSpec):
    id: str
    starts_at: EventTime
    created_at: EventTime

    @model_validator(mode="after")
    def _ends_after_start(self) -> Silence:  # replaces the spec's check: one ended early may end where it starts
        if self.ends_at < self.starts_at:
            raise ValueError("ends_at must not be before starts_at")
        return self

    def state_at(self, now: float) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def silences(self, alert: Alert, now: float) -> bool:
        return self.state_at(now) == "active" and self.matchers.matches(alert)


class MaintenanceWindowSpec(BaseModel):
    """A recurring schedule in a time zone: on each of ``weekdays`` (Mon=0) from ``start`` to ``end`` local time;
    an ``end`` at or before ``start`` runs past midnight into the next day."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    matchers: Matchers = Field(default_factory=Matchers)
    weekdays: list[int] = Field(min_length=1, max_length=7)
    start: str
    end: str
    timezone: str = Field(min_length=1, max_length=100)
    created_by: str = Field(min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)

    @field_validator("weekdays")
    @classmethod
    def _weekdays(cls, weekdays: list[int]) -> list[int]:
        if any(day < 0 or day > 6 for day in weekdays):
            raise ValueError("weekdays are 0 (Monday) to 6 (Sunday)")
        return sorted(set(weekdays))

    @field_validator("start", "end")
    @classmethod
    def _clock_time(cls, value: str) -> str:
        if not _CLOCK_TIME.match(value):
            raise ValueError(f"expected HH:MM (00:00 to 23:59), got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown IANA time zone {name!r}") from error
        return name


class MaintenanceWindow(MaintenanceWindowSpec):
    id: str
    created_at: EventTime

    def active_at(self, wall_time: float) -> bool:
        """Local wall-clock time decides, so a 02:00-04:00 window lasts one real hour on the night clocks go
        forward (02:00-03:00 does not exist) and three on the night they go back (02:00-03:00 happens twice)."""
        local = datetime.fromtimestamp(wall_time, ZoneInfo(self.timezone))
        now, start, end = local.time(), time.fromisoformat(self.start), time.fromisoformat(self.end)
        today, yesterday = local.weekday(), (local.weekday() - 1) % 7
        if start < end:
            return today in self.weekdays and start <= now < end
        return (today in self.weekdays and now >= start) or (yesterday in self.weekdays and now < end)

    def silences(self, alert: Alert, now: float) -> bool:
        return self.matchers.matches(alert) and self.active_at(now)


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alert_id: str
    by: str = Field(min_length=1, max_length=200)
    at: EventTime
    comment: str = Field(default="", max_length=2000)
    expires_at: EventTime | None = None


class AlertView(BaseModel):
    """An alert as operators see it: its latest transition, what was done about it and what silences it now."""

    alert_id: str
    modality: Modality
    stream: str
    severity: str
    state: Literal["firing", "resolved"]
    status: AlertStatus
    started_at: float
    event_time: float
    score: float
    threshold: float
    model: str
    top_channels: list[str]
    location: Location | None
    acknowledgement: Acknowledgement | None
    silenced_by: list[str]


@dataclass(frozen=True)
class RegistryEntry:
    """The latest transition of an alert and its notification history (wall clock)."""

    alert: Alert
    updated_at: float
    notified_at: float | None
    repeat_count: int


@dataclass(frozen=True)
class PendingTransition:
    """A transition waiting in its group for ``group_wait_s`` before it is notified."""

    group: str
    alert: Alert
    since: float


class LifecycleStore:
    """Everything the Notifier must not forget across a restart, in the state database (``operators/state_db.py``).

    Each method is one short statement; ``transaction()`` makes several of them (one transition handled) atomic,
    and what other stores of the same database do inside it (the journal rows of a notification) joins it.
    """

    def __init__(self, database: StateDatabase) -> None:
        self._database = database

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._database.transaction():
            yield

    def _rows(self, statement: Executable) -> list[Row[Any]]:
        with self._database.transaction() as db:
            return list(db.execute(statement).all())

    def _run(self, statement: Executable) -> int:
        with self._database.transaction() as db:
            return db.execute(statement).rowcount

    # silences
    def save_silence(self, silence: Silence) -> None:
        values = {"body": silence.model_dump_json(), "ends_at": silence.ends_at}
        statement = self._database.insert(silences).values(id=silence.id, **values)
        self._run(statement.on_conflict_do_update(index_elements=["id"], set_=values))

    def silence(self, silence_id: str) -> Silence | None:
        rows = self._rows(select(silences.c.body).where(silences.c.id == silence_id))
        return Silence.model_validate_json(rows[0][0]) if rows else None

    def silences(self) -> list[Silence]:
        rows = self._rows(select(silences.c.body).order_by(silences.c.seq))
        return [Silence.model_validate_json(row[0]) for row in rows]

    def unannounced_expired_silences(self, now: float) -> list[Silence]:
        rows = self._rows(
            select(silences.c.body)
            .where((silences.c.ends_at <= now) & (silences.c.expiry_announced == 0))
            .order_by(silences.c.seq)
        )
        return [Silence.model_validate_json(row[0]) for row in rows]

    def announce_silence_expiry(self, silence_id: str) -> bool:
        """Marks a silence's expiry as announced; False if it already was (one event per silence)."""
        return (
            self._run(
                update(silences)
                .where((silences.c.id == silence_id) & (silences.c.expiry_announced == 0))
                .values(expiry_announced=1)
            )
            > 0
        )

    # maintenance windows
    def save_window(self, window: MaintenanceWindow) -> None:
        self._run(insert(maintenance_windows).values(id=window.id, body=window.model_dump_json()))

    def windows(self) -> list[MaintenanceWindow]:
        rows = self._rows(select(maintenance_windows.c.body).order_by(maintenance_windows.c.seq))
        return [MaintenanceWindow.model_validate_json(row[0]) for row in rows]

    def delete_window(self, window_id: str) -> bool:
        return self._run(delete(maintenance_windows).where(maintenance_windows.c.id == window_id)) > 0

    # acknowledgements
    def save_acknowledgement(self, ack: Acknowledgement) -> None:
        statement = self._database.insert(acknowledgements).values(alert_id=ack.alert_id, body=ack.model_dump_json())
        self._run(statement.on_conflict_do_update(index_elements=["alert_id"], set_={"body": statement.excluded.body}))

    def acknowledgement(self, alert_id: str) -> Acknowledgement | None:
        rows = self._rows(select(acknowledgements.c.body).where(acknowledgements.c.alert_id == alert_id))
        return Acknowledgement.model_validate_json(rows[0][0]) if rows else None

    def acknowledgements(self) -> list[Acknowledgement]:
        rows = self._rows(select(acknowledgements.c.body).order_by(acknowledgements.c.seq))
        return [Acknowledgement.model_validate_json(row[0]) for row in rows]

    def delete_acknowledgement(self, alert_id: str) -> bool:
        return self._run(delete(acknowledgements).where(acknowledgements.c.alert_id == alert_id)) > 0

    # the alert registry and the transitions already handled
    def mark_handled(self, key: str, at: float) -> bool:
        """Records a transition's idempotency key; False when it was handled before (a re-delivery)."""
        with self._database.transaction() as db:
            return self._database.insert_new(db, self._database.insert(handled_transitions).values(key=key, at=at))

    def record_transition(self, alert: Alert, at: float) -> None:
        values = {"alert": alert.to_json().decode(), "state": alert.state, "updated_at": at}
        statement = self._database.insert(alert_registry).values(alert_id=alert.alert_id, **values)
        self._run(statement.on_conflict_do_update(index_elements=["alert_id"], set_=values))

    def mark_notified(self, alert_id: str, at: float, *, repeat: bool) -> None:
        self._run(
            update(alert_registry)
            .where(alert_registry.c.alert_id == alert_id)
            .values(notified_at=at, repeat_count=alert_registry.c.repeat_count + int(repeat))
        )

    def entry(self, alert_id: str) -> RegistryEntry | None:
        rows = self._rows(_SELECT_ENTRY.where(alert_registry.c.alert_id == alert_id))
        return _entry(*rows[0]) if rows else None

    def entries(self, *, firing_only: bool, limit: int | None = None) -> list[RegistryEntry]:
        """Newest first."""
        query = _SELECT_ENTRY.order_by(alert_registry.c.updated_at.desc(), alert_registry.c.seq.desc()).limit(limit)
        if firing_only:
            query = query.where(alert_registry.c.state == "firing")
        return [_entry(*row) for row in self._rows(query)]

    # transitions waiting for their group
    def add_pending(self, pending: PendingTransition) -> None:
        """One pending transition per alert: a newer one (its resolve, say) replaces an older not yet sent."""
        alert = pending.alert.to_json().decode()
        statement = self._database.insert(pending_notifications).values(
            alert_id=pending.alert.alert_id, grp=pending.group, alert=alert, since=pending.since
        )
        self._run(statement.on_conflict_do_update(index_elements=["alert_id"], set_={"alert": alert}))

    def pending(self) -> list[PendingTransition]:
        c = pending_notifications.c
        rows = self._rows(select(c.grp, c.alert, c.since).order_by(c.since, c.seq))
        return [PendingTransition(group, decode(Alert, alert), since) for group, alert, since in rows]

    def remove_pending(self, alert_ids: list[str]) -> None:
        self._run(delete(pending_notifications).where(pending_notifications.c.alert_id.in_(alert_ids)))

    # the event log
    def append_events(self, events: list[AlertEvent]) -> list[AlertEvent]:
        """Stores events; returns those that were new (an event id seen before is a re-run of the same change)."""
        added = []
        for event in events:
            statement = self._database.insert(alert_events).values(
                event_id=event.event_id, at=event.at, alert_id=event.alert_id, body=event.to_json().decode()
            )
            with self._database.transaction() as db:
                if self._database.insert_new(db, statement):
                    added.append(event)
        return added

    def events(self, *, since: float | None = None, alert_id: str | None = None, limit: int = 100) -> list[AlertEvent]:
        """The newest ``limit`` events matching, oldest first."""
        query = select(alert_events.c.seq, alert_events.c.body).order_by(alert_events.c.seq.desc()).limit(limit)
        if since is not None:
            query = query.where(alert_events.c.at >= since)
        if alert_id is not None:
            query = query.where(alert_events.c.alert_id == alert_id)
        newest = query.subquery()
        rows = self._rows(select(newest.c.body).order_by(newest.c.seq))
        return [decode(AlertEvent, row[0]) for row in rows]


_SELECT_ENTRY = select(
    alert_registry.c.alert, alert_registry.c.updated_at, alert_registry.c.notified_at, alert_registry.c.repeat_count
)


def _entry(alert: str, updated_at: float, notified_at: float | None, repeat_count: int) -> RegistryEntry:
    return RegistryEntry(decode(Alert, alert), updated_at, notified_at, repeat_count)
