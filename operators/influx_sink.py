"""Scores and alerts -> InfluxDB (v2 write API), buffered, retried, with an awaitable acknowledgement.

Schema (one measurement per modality, plus alerts):

- ``sensor_scores`` (tag ``asset``) and ``video_scores`` (tag ``camera``), both also tagged ``model`` and
  ``version``; fields ``score``, ``threshold``, ``is_anomaly`` and, for sensors, the top-N per-channel
  contributions as ``contribution_<channel>`` (channel names with characters other than letters, digits and ``_``
  replaced by ``_``); video points carry ``location_y``/``location_x`` when the score has a location.
- ``alerts`` (tags ``modality``, ``stream``, ``model``, ``severity``): fields ``firing`` (1 firing, 0 resolved),
  ``state``, ``alert_id``, ``score``, ``threshold``, ``started_at``, ``top_channels``.
- ``alert_events`` (tags ``kind``, ``event_id`` and, for events about an alert, ``modality`` and ``stream``):
  fields ``count`` (1: a sum counts events; VictoriaMetrics keeps only numeric fields), ``alert_id``, ``actor``,
  ``comment``, ``ref``, ``until`` (where set), at the event's wall-clock time.

Timestamps are EVENT time (a window's last sample, a frame's capture time, an alert transition's time) at
millisecond precision: a re-delivered message produces the same series and timestamp, so the store overwrites the
point instead of adding one (writes are idempotent, which is what makes at-least-once delivery safe).

:meth:`InfluxSink.write` returns a future that resolves once the store acknowledged every point handed over so far
in that call; the worker commits Kafka offsets only after it resolves. While the store is down, points stay in the
buffer (in order) and the flush is retried (``operators.resilience``: backoff without limit, behind a circuit
breaker): nothing is dropped, and the worker stops consuming once its in-flight limit is reached.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from functools import partial

from influxdb_client import Point, WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api_async import WriteApiAsync

from core import metrics
from core.contracts import Alert, AlertEvent, Score
from operators.resilience import Backoff, CircuitBreaker, breaker_gauge, call_with_retry

MEASUREMENTS = {"sensor": "sensor_scores", "video": "video_scores"}
STREAM_TAGS = {"sensor": "asset", "video": "camera"}
ALERTS_MEASUREMENT = "alerts"
ALERT_EVENTS_MEASUREMENT = "alert_events"
_FIELD_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def event_time_ms(event_time: float) -> int:
    return round(event_time * 1000)


def contribution_field(channel: str) -> str:
    return "contribution_" + _FIELD_UNSAFE.sub("_", channel)


def score_point(score: Score, top_n: int = 3) -> Point:
    point = (
        Point(MEASUREMENTS[score.modality])
        .tag(STREAM_TAGS[score.modality], score.stream)
        .tag("model", score.model)
        .tag("version", score.model_version or "default")
        .field("score", float(score.score))
        .field("threshold", float(score.threshold))
        .field("is_anomaly", bool(score.is_anomaly))
        .time(event_time_ms(score.event_time), WritePrecision.MS)
    )
    top = sorted(score.contributions.items(), key=lambda item: item[1], reverse=True)[:top_n]
    for channel, value in top:
        point.field(contribution_field(channel), float(value))
    if score.location is not None:
        point.field("location_y", float(score.location[0])).field("location_x", float(score.location[1]))
    return point


def alert_point(alert: Alert) -> Point:
    return (
        Point(ALERTS_MEASUREMENT)
        .tag("modality", alert.modality)
        .tag("stream", alert.stream)
        .tag("model", alert.model)
        .tag("severity", alert.severity)
        .field("firing", int(alert.state == "firing"))
        .field("state", alert.state)
        .field("alert_id", alert.alert_id)
        .field("score", float(alert.score))
        .field("threshold", float(alert.threshold))
        .field("started_at", float(alert.started_at))
        .field("top_channels", ",".join(alert.top_channels))
        .time(event_time_ms(alert.event_time), WritePrecision.MS)
    )


def alert_event_point(event: AlertEvent) -> Point:
    # event_id is a tag so that two events of one kind in the same millisecond (two silences ending at once) are
    # two points, not one overwriting the other; events are operator actions and transitions, few enough for that.
    point = Point(ALERT_EVENTS_MEASUREMENT).tag("kind", event.kind).tag("event_id", event.event_id)
    if event.modality is not None and event.stream is not None:
        point.tag("modality", event.modality).tag("stream", event.stream)
    point.field("count", 1).field("actor", event.actor).field("comment", event.comment)
    if event.alert_id is not None:
        point.field("alert_id", event.alert_id)
    if event.ref is not None:
        point.field("ref", event.ref)
    if event.until is not None:
        point.field("until", float(event.until))
    return point.time(event_time_ms(event.at), WritePrecision.MS)


class InfluxSink:
    def __init__(
        self,
        url: str,
        token: str,
        org: str,
        bucket: str,
        batch_size: int = 1000,
        flush_interval_s: float = 0.02,
        timeout_ms: int = 5000,
        backoff: Backoff | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._client_args = {"url": url, "token": token, "org": org, "timeout": timeout_ms}
        self.org, self.bucket = org, bucket
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.backoff = backoff or Backoff(initial_s=0.1, max_s=5.0)
        self.breaker = breaker or CircuitBreaker(on_state=breaker_gauge("store"))
        self._buffer: deque[tuple[str, asyncio.Future[None] | None]] = deque()
        self._has_data = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: InfluxDBClientAsync | None = None
        self._write_api: WriteApiAsync | None = None
        self._closing = False

    async def start(self) -> None:
        self._client = InfluxDBClientAsync(**self._client_args)
        self._write_api = self._client.write_api()
        self._task = asyncio.create_task(self._flush_forever(), name="influx-sink")

    def write(self, points: list[Point]) -> asyncio.Future[None]:
        """Queue points; the returned future resolves once the store acknowledged all of them."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not points:
            future.set_result(None)
            return future
        lines = [point.to_line_protocol() for point in points]
        for line in lines[:-1]:
            self._buffer.append((line, None))
        # Batches are written in order, so the last line's acknowledgement covers the earlier ones.
        self._buffer.append((lines[-1], future))
        metrics.SINK_BUFFERED.set(len(self._buffer))
        self._has_data.set()
        return future

    async def _flush_forever(self) -> None:
        while True:
            await self._has_data.wait()
            if len(self._buffer) < self.batch_size and not self._closing:
                await asyncio.sleep(self.flush_interval_s)
            batch = [self._buffer[i] for i in range(min(self.batch_size, len(self._buffer)))]
            record = "\n".join(line for line, _ in batch)
            # Every failure is retried: the points are ours and well formed, so what fails is the store or the link.
            await call_with_retry(partial(self._write, record), self.backoff, lambda _: True, breaker=self.breaker)
            for _ in batch:
                _, future = self._buffer.popleft()
                if future is not None and not future.done():
                    future.set_result(None)
            metrics.SINK_BUFFERED.set(len(self._buffer))
            if not self._buffer:
                self._has_data.clear()

    async def _write(self, record: str) -> None:
        assert self._write_api is not None
        started = time.perf_counter()
        try:
            await self._write_api.write(
                bucket=self.bucket, org=self.org, record=record, write_precision=WritePrecision.MS
            )
        except Exception:
            metrics.SINK_ERRORS.inc()
            raise
        metrics.SINK_LATENCY.observe(time.perf_counter() - started)

    async def aclose(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (waiting up to ``timeout_s`` for the store if it is down), then close. Points
        still buffered then were never acknowledged, so their offsets were not committed: they come back."""
        self._closing = True
        deadline = time.monotonic() + timeout_s
        while self._buffer and self._task is not None and not self._task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
