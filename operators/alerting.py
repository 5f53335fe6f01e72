"""Alerts from scores: one state machine per stream, driven by event time.

Phases of a stream (``modality/stream``)::

    ok ──anomalous──▶ pending ──anomalous for ≥ for_s and ≥ for_points──▶ firing ──below for ≥ resolve_for_s──▶ resolved
     ▲                   │ normal score                                   │ severity rises: firing again        │
     └───────────────────┴────────────────────────────────────────────────┴───── cooldown_s elapsed ─────────────┘

- Camera streams use ``video_for_s`` and ``video_for_points`` instead (a `for` in frames).
- "below" is hysteresis: a firing stream resolves only on scores under ``threshold * resolve_ratio`` (and not flagged).
- During the cooldown after a resolve a stream may go pending, but it fires no earlier than the cooldown's end.
- Scores at or before the last event time seen on a stream are late (or re-delivered) and change nothing; the
  state, including that event time, is saved after every score, so a restarted worker that re-reads the same scores
  emits nothing twice. Alert ids are derived from the stream and the start time, so they are the same on every run.
- The alerts a score emits are saved with the state in the same transaction, in an outbox, until the caller
  ``acknowledge``s them (after publishing); a worker that died in between finds them in ``unpublished()``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from core.contracts import SEVERITY_ORDER, Alert, Score, Severity, decode
from core.settings import AlertingSettings
from operators.sqlite_store import open_database

Phase = Literal["ok", "pending", "firing", "resolved"]


@dataclass
class StreamState:
    """Everything the state machine remembers about one stream; JSON-serialisable."""

    phase: Phase = "ok"
    last_ts: float | None = None
    pending_since: float | None = None
    pending_points: int = 0
    peak_ratio: float = 0.0
    top_channels: list[str] = field(default_factory=list)
    location: tuple[float, float] | None = None
    alert_id: str | None = None
    severity: Severity | None = None
    below_since: float | None = None
    cooldown_until: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), allow_nan=False)

    @classmethod
    def from_json(cls, raw: str) -> StreamState:
        data = json.loads(raw)
        if data.get("location") is not None:
            data["location"] = tuple(data["location"])
        return cls(**data)


class AlertStateStore(Protocol):
    """Where stream states live between scores and across restarts, with an outbox of unpublished alerts."""

    def load(self, key: str) -> StreamState | None: ...

    def save(self, key: str, state: StreamState, emitted: list[Alert]) -> None:
        """Stores the state and adds the alerts it emitted to the outbox, both or neither."""

    def unpublished(self) -> list[Alert]:
        """Outbox alerts not acknowledged yet, oldest first."""
        ...

    def acknowledge(self, alert: Alert) -> None: ...


class MemoryAlertStateStore:
    """Keeps states in this process only (tests, or a worker that may forget alerts on restart)."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}
        self._outbox: dict[str, Alert] = {}

    def load(self, key: str) -> StreamState | None:
        raw = self._states.get(key)
        return StreamState.from_json(raw) if raw is not None else None

    def save(self, key: str, state: StreamState, emitted: list[Alert]) -> None:
        self._states[key] = state.to_json()
        for alert in emitted:
            self._outbox.setdefault(idempotency_key(alert), alert)

    def unpublished(self) -> list[Alert]:
        return list(self._outbox.values())

    def acknowledge(self, alert: Alert) -> None:
        self._outbox.pop(idempotency_key(alert), None)


class SqliteAlertStateStore:
    """Keeps states in a sqlite file (WAL), committed after every score: survives a worker restart."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = open_database(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS alert_streams (key TEXT PRIMARY KEY, state TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS alert_outbox (key TEXT PRIMARY KEY, alert TEXT NOT NULL)")

    def load(self, key: str) -> StreamState | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM alert_streams WHERE key = ?", (key,)).fetchone()
        return StreamState.from_json(row[0]) if row else None

    def save(self, key: str, state: StreamState, emitted: list[Alert]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(
                    "INSERT INTO alert_streams (key, state) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET state = excluded.state",
                    (key, state.to_json()),
                )
                self._db.executemany(
                    "INSERT OR IGNORE INTO alert_outbox (key, alert) VALUES (?, ?)",
                    [(idempotency_key(alert), alert.to_json().decode()) for alert in emitted],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def unpublished(self) -> list[Alert]:
        with self._lock:
            rows = self._db.execute("SELECT alert FROM alert_outbox ORDER BY rowid").fetchall()
        return [decode(Alert, row[0]) for row in rows]

    def acknowledge(self, alert: Alert) -> None:
        with self._lock:
            self._db.execute("DELETE FROM alert_outbox WHERE key = ?", (idempotency_key(alert),))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def stream_key(modality: str, stream: str) -> str:
    return f"{modality}/{stream}"


def alert_id_for(key: str, started_at: float) -> str:
    """Deterministic: the same stream and start time give the same id on every run and every worker."""
    return "al-" + hashlib.sha256(f"{key}@{started_at!r}".encode()).hexdigest()[:20]


def idempotency_key(alert: Alert) -> str:
    """One key per transition; receivers that saw a key before can drop the delivery."""
    return f"{alert.alert_id}:{alert.state}:{alert.severity}"


_MAX_RATIO = 1e9  # stands in for "infinitely above" a zero threshold; states are JSON, which has no infinity


def score_ratio(score: Score) -> float:
    if score.threshold > 0:
        return min(score.score / score.threshold, _MAX_RATIO)
    return _MAX_RATIO if score.score > 0 else 0.0


class AlertEngine:
    """Turns scores into alert transitions; ``observe`` is synchronous and does no network I/O."""

    def __init__(self, settings: AlertingSettings, store: AlertStateStore | None = None) -> None:
        self.settings = settings
        self._store = store if store is not None else MemoryAlertStateStore()
        self._states: dict[str, StreamState] = {}
        self.stats: dict[str, int] = {"observed": 0, "late": 0, "fired": 0, "escalated": 0, "resolved": 0}

    def state(self, modality: str, stream: str) -> StreamState:
        key = stream_key(modality, stream)
        if key not in self._states:
            self._states[key] = self._store.load(key) or StreamState()
        return self._states[key]

    def forget(self) -> None:
        """Drops the states held in memory: the store is read again (a partition moved away and may come back with
        states another instance advanced meanwhile)."""
        self._states.clear()

    def observe(self, score: Score) -> list[Alert]:
        state = self.state(score.modality, score.stream)
        if state.last_ts is not None and score.event_time <= state.last_ts:
            self.stats["late"] += 1
            return []
        self.stats["observed"] += 1
        gap = state.last_ts is not None and score.event_time - state.last_ts > self.settings.max_gap_s
        state.last_ts = score.event_time
        alerts = self._step(stream_key(score.modality, score.stream), state, score, gap)
        self._store.save(stream_key(score.modality, score.stream), state, alerts)
        return alerts

    def unpublished(self) -> list[Alert]:
        """Alerts emitted but not acknowledged, e.g. by a worker that died before publishing them: publish these
        first after a restart (they keep their ids, so a receiver that got them already can drop them)."""
        return self._store.unpublished()

    def acknowledge(self, alert: Alert) -> None:
        """Marks an alert returned by ``observe`` or ``unpublished`` as published (out of the outbox)."""
        self._store.acknowledge(alert)

    def _step(self, key: str, state: StreamState, score: Score, gap: bool) -> list[Alert]:
        cfg = self.settings
        if state.phase == "resolved" and score.event_time >= (state.cooldown_until or -math.inf):
            state.phase = "ok"
        if state.phase == "firing":
            return self._step_firing(state, score, gap)
        if not score.is_anomaly:
            if state.phase == "pending":
                self._clear_pending(state, score.event_time)
            return []
        if state.phase in ("ok", "resolved") or gap:
            state.phase = "pending"
            state.pending_since, state.pending_points, state.peak_ratio = score.event_time, 0, 0.0
        state.pending_points += 1
        self._track_peak(state, score)
        assert state.pending_since is not None
        for_s, for_points = cfg.pending_rule(score.modality)
        held = score.event_time - state.pending_since >= for_s and state.pending_points >= for_points
        if not held or score.event_time < (state.cooldown_until or -math.inf):
            return []
        state.phase = "firing"
        state.alert_id = alert_id_for(key, state.pending_since)
        state.severity = self._severity(state.peak_ratio)
        state.below_since = None
        self.stats["fired"] += 1
        return [self._alert(state, score, "firing")]

    def _step_firing(self, state: StreamState, score: Score, gap: bool) -> list[Alert]:
        cfg = self.settings
        below = not score.is_anomaly and score.score < score.threshold * cfg.resolve_ratio
        if not below:
            state.below_since = None
            if not score.is_anomaly:
                return []
            self._track_peak(state, score)
            severity = self._severity(state.peak_ratio)
            assert state.severity is not None
            if SEVERITY_ORDER[severity] <= SEVERITY_ORDER[state.severity]:
                return []
            state.severity = severity
            self.stats["escalated"] += 1
            return [self._alert(state, score, "firing")]
        if state.below_since is None or gap:
            state.below_since = score.event_time
        if score.event_time - state.below_since < cfg.resolve_for_s:
            return []
        resolved = self._alert(state, score, "resolved")
        self.stats["resolved"] += 1
        state.cooldown_until = score.event_time + cfg.cooldown_s
        state.alert_id, state.severity, state.below_since = None, None, None
        self._clear_pending(state, score.event_time)
        return [resolved]

    def _clear_pending(self, state: StreamState, event_time: float) -> None:
        state.phase = "resolved" if event_time < (state.cooldown_until or -math.inf) else "ok"
        state.pending_since, state.pending_points, state.peak_ratio = None, 0, 0.0
        state.top_channels, state.location = [], None

    def _track_peak(self, state: StreamState, score: Score) -> None:
        """The worst score so far decides severity and which channels or place an alert points at."""
        ratio = score_ratio(score)
        if ratio < state.peak_ratio:
            return
        state.peak_ratio = ratio
        ranked = sorted(score.contributions.items(), key=lambda item: item[1], reverse=True)
        state.top_channels = [channel for channel, _ in ranked[: self.settings.top_channels]]
        state.location = score.location

    def _severity(self, ratio: float) -> Severity:
        return "critical" if ratio >= self.settings.critical_ratio else "warning"

    def _alert(self, state: StreamState, score: Score, transition: Literal["firing", "resolved"]) -> Alert:
        assert state.alert_id is not None and state.severity is not None and state.pending_since is not None
        return Alert(
            alert_id=state.alert_id,
            modality=score.modality,
            stream=score.stream,
            state=transition,
            severity=state.severity,
            started_at=state.pending_since,
            event_time=score.event_time,
            score=score.score,
            threshold=score.threshold,
            model=score.model,
            top_channels=state.top_channels,
            location=state.location,
        )
