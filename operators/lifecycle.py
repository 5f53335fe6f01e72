"""What operators do about alerts, and what became of each alert: silences, maintenance windows,
acknowledgements, the alert registry and the AlertEvent log, kept durably in sqlite.

All times here are wall-clock seconds since the epoch (the Notifier's clock), not event time: a silence for "the
next two hours" means the operator's next two hours, whatever the event times of replayed scores are.
"""

from __future__ import annotations

import fnmatch
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.contracts import Alert, AlertEvent, EventTime, Location, Modality, Severity, decode
from operators.sqlite_store import open_database

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


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, body TEXT NOT NULL, ends_at REAL NOT NULL,"
    " expiry_announced INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS maintenance_windows (id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS acknowledgements (alert_id TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_registry (alert_id TEXT PRIMARY KEY, alert TEXT NOT NULL, state TEXT NOT NULL,"
    " updated_at REAL NOT NULL, notified_at REAL, repeat_count INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS handled_transitions (key TEXT PRIMARY KEY, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pending_notifications (alert_id TEXT PRIMARY KEY, grp TEXT NOT NULL,"
    " alert TEXT NOT NULL, since REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alert_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT UNIQUE NOT NULL,"
    " at REAL NOT NULL, alert_id TEXT, body TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS alert_events_by_alert ON alert_events (alert_id, seq)",
)


class LifecycleStore:
    """Everything the Notifier must not forget across a restart, in one sqlite file.

    Each method is one short statement; ``transaction()`` makes several of them (one transition handled) atomic.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = open_database(path)
        for statement in _SCHEMA:
            self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # silences
    def save_silence(self, silence: Silence) -> None:
        self._run(
            "INSERT INTO silences (id, body, ends_at) VALUES (?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET body = excluded.body, ends_at = excluded.ends_at",
            (silence.id, silence.model_dump_json(), silence.ends_at),
        )

    def silence(self, silence_id: str) -> Silence | None:
        rows = self._rows("SELECT body FROM silences WHERE id = ?", (silence_id,))
        return Silence.model_validate_json(rows[0][0]) if rows else None

    def silences(self) -> list[Silence]:
        return [Silence.model_validate_json(row[0]) for row in self._rows("SELECT body FROM silences ORDER BY rowid")]

    def unannounced_expired_silences(self, now: float) -> list[Silence]:
        rows = self._rows("SELECT body FROM silences WHERE ends_at <= ? AND expiry_announced = 0", (now,))
        return [Silence.model_validate_json(row[0]) for row in rows]

    def announce_silence_expiry(self, silence_id: str) -> bool:
        """Marks a silence's expiry as announced; False if it already was (one event per silence)."""
        return (
            self._run("UPDATE silences SET expiry_announced = 1 WHERE id = ? AND expiry_announced = 0", (silence_id,))
            > 0
        )

    # maintenance windows
    def save_window(self, window: MaintenanceWindow) -> None:
        self._run("INSERT INTO maintenance_windows (id, body) VALUES (?, ?)", (window.id, window.model_dump_json()))

    def windows(self) -> list[MaintenanceWindow]:
        rows = self._rows("SELECT body FROM maintenance_windows ORDER BY rowid")
        return [MaintenanceWindow.model_validate_json(row[0]) for row in rows]

    def delete_window(self, window_id: str) -> bool:
        return self._run("DELETE FROM maintenance_windows WHERE id = ?", (window_id,)) > 0

    # acknowledgements
    def save_acknowledgement(self, ack: Acknowledgement) -> None:
        self._run(
            "INSERT INTO acknowledgements (alert_id, body) VALUES (?, ?)"
            " ON CONFLICT(alert_id) DO UPDATE SET body = excluded.body",
            (ack.alert_id, ack.model_dump_json()),
        )

    def acknowledgement(self, alert_id: str) -> Acknowledgement | None:
        rows = self._rows("SELECT body FROM acknowledgements WHERE alert_id = ?", (alert_id,))
        return Acknowledgement.model_validate_json(rows[0][0]) if rows else None

    def acknowledgements(self) -> list[Acknowledgement]:
        rows = self._rows("SELECT body FROM acknowledgements ORDER BY rowid")
        return [Acknowledgement.model_validate_json(row[0]) for row in rows]

    def delete_acknowledgement(self, alert_id: str) -> bool:
        return self._run("DELETE FROM acknowledgements WHERE alert_id = ?", (alert_id,)) > 0

    # the alert registry and the transitions already handled
    def mark_handled(self, key: str, at: float) -> bool:
        """Records a transition's idempotency key; False when it was handled before (a re-delivery)."""
        return self._run("INSERT OR IGNORE INTO handled_transitions (key, at) VALUES (?, ?)", (key, at)) > 0

    def record_transition(self, alert: Alert, at: float) -> None:
        self._run(
            "INSERT INTO alert_registry (alert_id, alert, state, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(alert_id) DO UPDATE SET alert = excluded.alert, state = excluded.state,"
            " updated_at = excluded.updated_at",
            (alert.alert_id, alert.to_json().decode(), alert.state, at),
        )

    def mark_notified(self, alert_id: str, at: float, *, repeat: bool) -> None:
        self._run(
            "UPDATE alert_registry SET notified_at = ?, repeat_count = repeat_count + ? WHERE alert_id = ?",
            (at, int(repeat), alert_id),
        )

    def entry(self, alert_id: str) -> RegistryEntry | None:
        rows = self._rows(
            "SELECT alert, updated_at, notified_at, repeat_count FROM alert_registry WHERE alert_id = ?", (alert_id,)
        )
        return _entry(rows[0]) if rows else None

    def entries(self, *, firing_only: bool, limit: int | None = None) -> list[RegistryEntry]:
        """Newest first."""
        where = "WHERE state = 'firing'" if firing_only else ""
        rows = self._rows(
            f"SELECT alert, updated_at, notified_at, repeat_count FROM alert_registry {where}"
            " ORDER BY updated_at DESC, rowid DESC LIMIT ?",
            (-1 if limit is None else limit,),
        )
        return [_entry(row) for row in rows]

    # transitions waiting for their group
    def add_pending(self, pending: PendingTransition) -> None:
        """One pending transition per alert: a newer one (its resolve, say) replaces an older not yet sent."""
        self._run(
            "INSERT INTO pending_notifications (alert_id, grp, alert, since) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(alert_id) DO UPDATE SET alert = excluded.alert",
            (pending.alert.alert_id, pending.group, pending.alert.to_json().decode(), pending.since),
        )

    def pending(self) -> list[PendingTransition]:
        rows = self._rows("SELECT grp, alert, since FROM pending_notifications ORDER BY since, rowid")
        return [PendingTransition(group, decode(Alert, alert), since) for group, alert, since in rows]

    def remove_pending(self, alert_ids: list[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM pending_notifications WHERE alert_id = ?", [(i,) for i in alert_ids])

    # the event log
    def append_events(self, events: list[AlertEvent]) -> list[AlertEvent]:
        """Stores events; returns those that were new (an event id seen before is a re-run of the same change)."""
        added = []
        for event in events:
            if self._run(
                "INSERT OR IGNORE INTO alert_events (event_id, at, alert_id, body) VALUES (?, ?, ?, ?)",
                (event.event_id, event.at, event.alert_id, event.to_json().decode()),
            ):
                added.append(event)
        return added

    def events(self, *, since: float | None = None, alert_id: str | None = None, limit: int = 100) -> list[AlertEvent]:
        """The newest ``limit`` events matching, oldest first."""
        rows = self._rows(
            "SELECT body FROM (SELECT seq, body FROM alert_events WHERE (? IS NULL OR at >= ?)"
            " AND (? IS NULL OR alert_id = ?) ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (since, since, alert_id, alert_id, limit),
        )
        return [decode(AlertEvent, row[0]) for row in rows]


def _entry(row: sqlite3.Row) -> RegistryEntry:
    alert, updated_at, notified_at, repeat_count = row
    return RegistryEntry(decode(Alert, alert), updated_at, notified_at, repeat_count)
