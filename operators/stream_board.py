"""What the console's overview shows, in memory: per stream its last score, its alert phase and a ring buffer of
recent scores for a sparkline; plus a live feed of scores for server-sent events.

Fed by the alerting service with every score and the alert transitions it caused (stream order); on an API
instance of its own (``--role api``), by the scores and alerts topics. It is a view, not a record: after a
restart it fills again from the next scores (the store keeps the history).

phase: ``ok`` (last score normal, no open alert), ``pending`` (anomalous, no alert yet), ``firing`` (an open
alert), ``resolved`` (the last alert resolved and no anomalous score since).
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from core.contracts import Alert, Modality, Score

Phase = Literal["ok", "pending", "firing", "resolved"]


@dataclass
class StreamEntry:
    modality: Modality
    stream: str
    last: Score
    phase: Phase = "ok"
    alert_id: str | None = None  # the open alert while firing
    recent: deque[tuple[float, float, float]] = field(default_factory=deque)

    def view(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "stream": self.stream,
            "phase": self.phase,
            "alert_id": self.alert_id,
            "last": {
                "event_time": self.last.event_time,
                "score": self.last.score,
                "threshold": self.last.threshold,
                "is_anomaly": self.last.is_anomaly,
            },
            "recent": [list(point) for point in self.recent],
        }


class StreamBoard:
    def __init__(self, recent: int = 120, queue_size: int = 256) -> None:
        self._recent = recent
        self._queue_size = queue_size
        self._entries: dict[tuple[str, str], StreamEntry] = {}
        self._listeners: set[asyncio.Queue[Score | None]] = set()

    def record(self, score: Score, alerts: list[Alert]) -> None:
        entry = self._entry(score)
        entry.last = score
        entry.recent.append((score.event_time, score.score, score.threshold))
        for alert in alerts:
            entry.alert_id = alert.alert_id if alert.state == "firing" else None
        if entry.alert_id is not None:
            entry.phase = "firing"
        elif any(alert.state == "resolved" for alert in alerts):
            entry.phase = "resolved"
        elif score.is_anomaly:
            entry.phase = "pending"
        elif entry.phase != "resolved":
            entry.phase = "ok"
        self._publish(score)

    def record_alert(self, alert: Alert) -> None:
        """A transition seen apart from its score (an API instance follows the alerts topic, which runs beside the
        scores topic): the stream's phase follows it; the scores already recorded stay as they are."""
        entry = self._entries.get((alert.modality, alert.stream))
        if entry is None:  # a stream whose scores this instance has not seen yet: the alert's score stands in
            entry = self._entry(
                Score(
                    modality=alert.modality,
                    stream=alert.stream,
                    event_time=alert.event_time,
                    score=alert.score,
                    threshold=alert.threshold,
                    is_anomaly=alert.state == "firing",
                    model=alert.model,
                    model_version="",
                )
            )
        if alert.state == "firing":
            entry.phase, entry.alert_id = "firing", alert.alert_id
        elif entry.alert_id in (None, alert.alert_id):
            entry.phase, entry.alert_id = "resolved", None

    def _entry(self, last: Score) -> StreamEntry:
        """The stream's entry, made with ``last`` as its last score if the stream is new."""
        key = (last.modality, last.stream)
        if key not in self._entries:
            self._entries[key] = StreamEntry(last.modality, last.stream, last, recent=deque(maxlen=self._recent))
        return self._entries[key]

    def entries(self) -> list[StreamEntry]:
        return sorted(self._entries.values(), key=lambda entry: (entry.modality, entry.stream))

    def listen(self) -> asyncio.Queue[Score | None]:
        """A queue of every score from now on; a slow listener loses its oldest scores."""
        queue: asyncio.Queue[Score | None] = asyncio.Queue(self._queue_size)
        self._listeners.add(queue)
        return queue

    def unlisten(self, queue: asyncio.Queue[Score | None]) -> None:
        self._listeners.discard(queue)

    def close(self) -> None:
        """Ends every listener (``None`` is the end marker)."""
        for queue in list(self._listeners):
            self._put(queue, None)

    def _publish(self, score: Score) -> None:
        for queue in list(self._listeners):
            self._put(queue, score)

    @staticmethod
    def _put(queue: asyncio.Queue[Score | None], item: Score | None) -> None:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(item)
