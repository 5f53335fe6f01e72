"""The streaming worker: the whole topology, declared in one place (:meth:`Worker._topology`).

    sensor-readings --decode/validate--> windowing (per asset) --+
                                                                 +--> micro-batch scoring (Triton, across streams)
    video-frames ----decode/validate--> frame buffer (per camera)+        --> threshold (per stream, in order)
                                                                          --> alerts (AlertObserver.observe)
                                                                          --> store (scores, alerts) + scores and
                                                                              alerts topics
    anything invalid or permanently unscorable --> dead-letter topic, with the reason

Why a plain aiokafka consumer loop and not faust agents: the worker must commit an offset only once everything
that offset fed is in the store, and a reading feeds several overlapping windows that are scored in batches
together with other assets' windows, acknowledged by the store later and out of order. Here the committable
offset of a partition is computed directly: the smallest offset still buffered by the windowing or frame state
of that partition's streams, or still in flight (scoring, store, dead-letter produce), else the next unread one.
Faust acks an event when its agent moves past it (or per event with ``noack``), so the same guarantee would need
a per-reading reference count across windows; its ``group_by`` would add a repartition hop although producers
already key readings by asset (one asset -> one partition -> one worker); and tansu breaks the table recovery that
faust would use for state. Settings follow the tansu notes: no idempotent/transactional producer (so no
exactly-once), ``auto_offset_reset='earliest'`` with committed offsets, short session timeouts.

Delivery: at least once. After a crash the worker re-reads from the committed offsets, rebuilds window and frame
state, and re-scores what was in flight; scores carry event-time timestamps, so the store overwrites instead of
duplicating. While Triton or the store is down, work waits (retry with backoff behind a circuit breaker); when
``stream.max_in_flight`` windows are waiting, the loop stops fetching. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import json
import logging
import time
from collections import Counter as Multiset
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import metrics
from core.contracts import (
    FRAME_HEADER,
    Alert,
    ContractError,
    DeadLetter,
    Modality,
    Score,
    SensorReading,
    VideoFrame,
    decode,
)
from core.settings import Settings
from operators.batching import MicroBatcher
from operators.frames import FrameBuffer, FrameStack, decode_frame
from operators.influx_sink import InfluxSink, alert_point, score_point
from operators.model_cards import (
    ModelCardError,
    TsModelCard,
    VideoModelCard,
    card_path,
    load_ts_card,
    load_video_card,
)
from operators.resilience import Backoff, CircuitBreaker
from operators.thresholding import ThresholdConfig, Thresholder
from operators.triton_stage import PermanentScoringError, TritonStage, TsRequest, TsResult, VideoResult
from operators.windowing import EmittedWindow, SensorWindower
from pipeline.alerting_service import AlertingService

log = logging.getLogger("diffsentry.worker")
PRODUCER_BATCH_BYTES = 1 << 20


class AlertObserver(Protocol):
    """The alerting hook (``pipeline.alerting_service.AlertingService`` in production): sees every score in stream
    order and returns the alert transitions it causes; each is acknowledged once published (topic and store)."""

    def observe(self, score: Score) -> list[Alert]: ...

    def recover(self) -> list[Alert]: ...

    def acknowledge(self, alert: Alert) -> None: ...


def _check_key(record: ConsumerRecord, stream: str) -> None:
    """Windows and frame stacks need all of a stream's messages in one partition, in order: the key is the stream."""
    if record.key != stream.encode():
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        raise ContractError(f"message of {stream!r} keyed {key!r}: readings and frames must be keyed by asset/camera")


class AssetRegistry:
    """Admitted asset ids: glob patterns from ``sensors.assets``, else the ts model card's streams, else all."""

    def __init__(self, patterns: list[str], card_streams: tuple[str, ...]) -> None:
        self.patterns = list(patterns) or list(card_streams) or ["*"]
        self._known: dict[str, bool] = {}

    def admits(self, asset: str) -> bool:
        if asset not in self._known:
            self._known[asset] = any(fnmatch.fnmatchcase(asset, pattern) for pattern in self.patterns)
        return self._known[asset]


class OffsetLedger:
    """Which offsets of each partition are still needed; the committable offset follows from it."""

    def __init__(self) -> None:
        self.next_offset: dict[TopicPartition, int] = {}
        self.in_flight: dict[TopicPartition, Multiset[int]] = {}
        self.committed: dict[TopicPartition, int] = {}

    def consumed(self, tp: TopicPartition, offset: int) -> None:
        self.next_offset[tp] = max(self.next_offset.get(tp, 0), offset + 1)

    def hold(self, tp: TopicPartition, offset: int) -> None:
        self.in_flight.setdefault(tp, Multiset())[offset] += 1

    def release(self, tp: TopicPartition, offset: int) -> None:
        held = self.in_flight.get(tp)
        if held is None:  # the partition was revoked meanwhile
            return
        held[offset] -= 1
        if held[offset] <= 0:
            del held[offset]

    def committable(self, tp: TopicPartition, buffered: list[int]) -> int | None:
        if tp not in self.next_offset:
            return None
        candidates = [self.next_offset[tp], *buffered, *self.in_flight.get(tp, ())]
        return min(candidates)

    def forget(self, tp: TopicPartition) -> None:
        self.next_offset.pop(tp, None)
        self.in_flight.pop(tp, None)
        self.committed.pop(tp, None)


@dataclass
class _StreamOrder:
    """Scores of one stream pass thresholding and alerting in emission order, whatever order Triton answers in."""

    tails: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def enter(self, stream: str) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        previous = self.tails.get(stream)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.tails[stream] = mine
        return previous, mine

    def leave(self, stream: str, mine: asyncio.Future[None]) -> None:
        if not mine.done():
            mine.set_result(None)
        if self.tails.get(stream) is mine:
            del self.tails[stream]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker._commit(revoked)
        self.worker._forget(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Worker:
    def __init__(self, settings: Settings, alerts: AlertObserver | None = None) -> None:
        self.settings = settings
        self.alerts = alerts  # None: run() starts the AlertingService (engine, subscriptions API, delivery)
        self._alerting: AlertingService | None = None
        self.ts_card, self.video_card = self._load_cards()
        stream = settings.stream
        self.triton = TritonStage(
            settings.triton.grpc_url,
            settings.triton.ts_model,
            settings.triton.video_model,
            settings.triton.ts_model_version,
            settings.triton.video_model_version,
            request_timeout_s=settings.triton.request_timeout_s,
            backoff=Backoff(initial_s=stream.backoff_initial_s, max_s=stream.backoff_max_s),
            breaker=CircuitBreaker(
                stream.breaker_failures,
                stream.breaker_reset_s,
                on_state=lambda state: metrics.BREAKER_OPEN.labels("triton").set(state != "closed"),
            ),
        )
        self.sink = InfluxSink(
            settings.influx.url,
            settings.influx.token,
            settings.influx.org,
            settings.influx.bucket,
            batch_size=stream.sink_batch_size,
            flush_interval_s=stream.sink_flush_interval_ms / 1000,
            timeout_ms=stream.sink_timeout_ms,
            backoff=Backoff(initial_s=stream.backoff_initial_s, max_s=stream.backoff_max_s),
        )
        threshold_config = ThresholdConfig(**stream.threshold.model_dump())
        self.ledger = OffsetLedger()
        self.order = _StreamOrder()
        self._in_flight = asyncio.Semaphore(stream.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stream_partition: dict[tuple[Modality, str], TopicPartition] = {}
        self.windower: SensorWindower | None = None
        self.frames: FrameBuffer | None = None
        if self.ts_card is not None:
            self.mode = settings.sensors.mode or self.ts_card.default_mode
            self.assets = AssetRegistry(settings.sensors.assets, self.ts_card.streams)
            self.windower = SensorWindower(
                self.ts_card.channels,
                self.ts_card.window,
                self.ts_card.stride,
                self.ts_card.sample_period_s,
                settings.sensors.allowed_lateness,
                settings.sensors.min_observed_fraction,
            )
            self.ts_thresholds = Thresholder(self.ts_card.threshold(self.mode), threshold_config)
            self.ts_batcher: MicroBatcher[TsRequest, TsResult] = MicroBatcher(
                self.triton.score_ts, stream.max_batch, stream.max_wait_ms / 1000, stream.max_concurrency
            )
        if self.video_card is not None:
            self.frames = FrameBuffer(self.video_card.context)
            self.video_thresholds = Thresholder(self.video_card.threshold, threshold_config)
            self.video_batcher: MicroBatcher[np.ndarray, VideoResult] = MicroBatcher(
                self.triton.score_video, stream.max_batch, stream.max_wait_ms / 1000, stream.max_concurrency
            )
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.ready = asyncio.Event()
        self.health_port: int | None = None

    def _load_cards(self) -> tuple[TsModelCard | None, VideoModelCard | None]:
        repository, triton = self.settings.model_repository, self.settings.triton
        cards: list = []
        for loader, model in ((load_ts_card, triton.ts_model), (load_video_card, triton.video_model)):
            try:
                cards.append(loader(card_path(repository, model)))
            except ModelCardError as error:
                log.warning("%s: %s; its topic is not consumed", model, error)
                cards.append(None)
        if cards == [None, None]:
            raise ModelCardError(f"no usable model card under {repository}: nothing to score")
        return cards[0], cards[1]

    def _topology(self) -> dict[str, Callable[[TopicPartition, ConsumerRecord], Awaitable[None]]]:
        """Topic -> its handler; each handler feeds the shared path score -> threshold -> alerts -> store."""
        topics = self.settings.topics
        topology = {}
        if self.windower is not None:
            topology[topics.sensor_readings] = self._on_reading
        if self.frames is not None:
            topology[topics.video_frames] = self._on_frame
        return topology

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        settings, kafka = self.settings, self.settings.kafka
        self.topology = self._topology()
        common = kafka.client_options()
        # Large record batches: with aiokafka's 16 KiB default, every sender waiting on a full batch wakes and
        # retries at each drain, which cost a third of the worker's CPU at a few hundred scores per second.
        self.producer = AIOKafkaProducer(
            **common, acks="all", linger_ms=2, max_batch_size=PRODUCER_BATCH_BYTES, enable_idempotence=False
        )
        self.consumer = AIOKafkaConsumer(
            **common,
            group_id=kafka.consumer_group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.stream.session_timeout_ms,
            heartbeat_interval_ms=settings.stream.heartbeat_interval_ms,
            rebalance_timeout_ms=settings.stream.session_timeout_ms,
            max_poll_records=settings.stream.fetch_max_records,
        )
        health = await self._start_health_server()
        await self.sink.start()
        await self.producer.start()
        if self.alerts is None:
            self._alerting = await AlertingService.start(settings, dead_letter=self._publish_dead_letter)
            self.alerts = self._alerting
        # Alerts a previous run emitted but did not publish: publish them before anything new.
        for alert in self.alerts.recover():
            await self._emit_alerts([alert])
        await self.consumer.start()
        self.consumer.subscribe(list(self.topology), listener=_Rebalance(self))
        committer = asyncio.create_task(self._commit_forever(), name="committer")
        try:
            await self._consume(stop)
        finally:
            await self._shutdown(committer, health)

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            fetch = asyncio.create_task(self.consumer.getmany(timeout_ms=200))
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                break
            self.ready.set()
            for tp, records in fetch.result().items():
                handler = self.topology[tp.topic]
                for record in records:
                    self.ledger.consumed(tp, record.offset)
                    metrics.MESSAGES.labels(tp.topic).inc()
                    await handler(tp, record)
                self._observe_lag(tp)
        stopping.cancel()

    async def _shutdown(self, committer: asyncio.Task[None], health: web.AppRunner) -> None:
        # Finish what is in flight (bounded: the rest is re-read from the committed offsets next time).
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        committer.cancel()
        await asyncio.gather(committer, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._commit()
        assert self.consumer is not None and self.producer is not None
        await self.consumer.stop()
        await self.producer.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sink.aclose()
        await self.triton.close()
        if self._alerting is not None:
            await self._alerting.stop()
        await health.cleanup()

    # -- sensors ---------------------------------------------------------------------------------------------

    async def _on_reading(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        assert self.windower is not None
        try:
            reading = decode(SensorReading, record.value)
            _check_key(record, reading.asset)
            if not self.assets.admits(reading.asset):
                raise ContractError(
                    f"unknown asset {reading.asset!r}: not in the asset registry {self.assets.patterns} "
                    "(sensors.assets)"
                )
            windows = self.windower.add(reading, ref=record.offset)
        except ContractError as error:
            self._dead_letter(tp, record, error)
            return
        self._stream_partition[("sensor", reading.asset)] = tp
        late = self.windower.late_readings
        if late:
            metrics.LATE.labels("sensor").inc(late)
            self.windower.late_readings = 0
        for window in windows:
            await self._spawn(tp, window.oldest_ref, record, "sensor", window.asset, window)

    async def _score_window(self, window: EmittedWindow) -> tuple[float, dict[str, float], None]:
        assert self.ts_card is not None
        result = await self.ts_batcher.submit(TsRequest(window.asset, window.values, self.mode))
        contributions = dict(zip(self.ts_card.channels, map(float, result.channel_scores), strict=True))
        return result.score, contributions, None

    # -- video -----------------------------------------------------------------------------------------------

    async def _on_frame(self, tp: TopicPartition, record: ConsumerRecord) -> None:
        assert self.frames is not None and self.video_card is not None
        try:
            header = dict(record.headers or ()).get(FRAME_HEADER)
            if header is None:
                raise ContractError(f"frame without the {FRAME_HEADER!r} header")
            frame = decode(VideoFrame, header)
            _check_key(record, frame.camera)
            image = decode_frame(frame, record.value or b"", self.video_card.height, self.video_card.width)
        except ContractError as error:
            self._dead_letter(tp, record, error)
            return
        self._stream_partition[("video", frame.camera)] = tp
        stale = self.frames.stale_frames
        stack = self.frames.add(frame, image, ref=record.offset)
        if self.frames.stale_frames > stale:
            metrics.LATE.labels("video").inc()
        if stack is not None:
            await self._spawn(tp, stack.oldest_ref, record, "video", stack.camera, stack)

    async def _score_stack(self, stack: FrameStack) -> tuple[float, dict[str, float], tuple[float, float]]:
        result = await self.video_batcher.submit(stack.frames)
        y, x = np.unravel_index(int(np.argmax(result.map)), result.map.shape)
        location = ((y + 0.5) / result.map.shape[0], (x + 0.5) / result.map.shape[1])
        return result.score, {}, (float(location[0]), float(location[1]))

    # -- shared path: score -> threshold -> alerts -> store + topics -------------------------------------------

    async def _spawn(
        self,
        tp: TopicPartition,
        oldest_ref: int | None,
        trigger: ConsumerRecord,
        modality: Modality,
        stream: str,
        item: EmittedWindow | FrameStack,
    ) -> None:
        await self._in_flight.acquire()  # backpressure: stop reading while too much waits for Triton or the store
        hold = trigger.offset if oldest_ref is None else oldest_ref
        self.ledger.hold(tp, hold)
        metrics.WINDOWS.labels(modality).inc()
        metrics.IN_FLIGHT.inc()
        previous, mine = self.order.enter(stream)
        task = asyncio.create_task(self._process(tp, hold, trigger, modality, stream, item, previous, mine))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(
        self,
        tp: TopicPartition,
        hold: int,
        trigger: ConsumerRecord,
        modality: Modality,
        stream: str,
        item: EmittedWindow | FrameStack,
        previous: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> None:
        try:
            triton = self.settings.triton
            if isinstance(item, EmittedWindow):
                assert self.ts_card is not None
                ts, thresholds, scoring = item.end_ts, self.ts_thresholds, self._score_window(item)
                model_name, version = triton.ts_model, self.ts_card.version or triton.ts_model_version
            else:
                assert self.video_card is not None
                ts, thresholds, scoring = item.ts, self.video_thresholds, self._score_stack(item)
                model_name, version = triton.video_model, self.video_card.version or triton.video_model_version
            try:
                value, contributions, location = await scoring
            except PermanentScoringError as error:
                if previous is not None:
                    await previous
                self.order.leave(stream, mine)
                await self._dead_letter_item(tp, trigger, modality, stream, item, error)
                return
            if previous is not None:
                await previous
            threshold, is_anomaly = thresholds.apply(stream, value)
            score = Score(
                modality=modality,
                stream=stream,
                ts=ts,
                score=value,
                threshold=threshold,
                is_anomaly=is_anomaly,
                model=model_name,
                model_version=version,
                contributions=contributions,
                location=location,
                produced_at=trigger.timestamp / 1000,
            )
            assert self.alerts is not None
            alerts = self.alerts.observe(score)
            self.order.leave(stream, mine)
            await self._emit(score, alerts)
            metrics.SCORES.labels(modality, str(is_anomaly).lower()).inc()
            metrics.END_TO_END.labels(modality).observe(max(0.0, time.time() - trigger.timestamp / 1000))
        except Exception as error:  # a bug, not bad input: keep the pipeline running, keep the evidence
            log.exception("unexpected failure on %s %s", modality, stream)
            self.order.leave(stream, mine)
            await self._dead_letter_item(tp, trigger, modality, stream, item, error)
        finally:
            self.ledger.release(tp, hold)
            metrics.IN_FLIGHT.dec()
            self._in_flight.release()

    async def _emit(self, score: Score, alerts: list[Alert]) -> None:
        """Score and alerts to the store and their topics; returns once all are acknowledged."""
        assert self.producer is not None
        written = self.sink.write([score_point(score, self.settings.sensors.top_channels)])
        sent = await self.producer.send(self.settings.topics.scores, score.to_json(), key=score.stream.encode())
        await asyncio.gather(written, sent, self._emit_alerts(alerts))

    async def _emit_alerts(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        assert self.producer is not None and self.alerts is not None
        written = self.sink.write([alert_point(alert) for alert in alerts])
        topic = self.settings.topics.alerts
        sends = [await self.producer.send(topic, alert.to_json(), key=alert.stream.encode()) for alert in alerts]
        await asyncio.gather(written, *sends)
        for alert in alerts:
            self.alerts.acknowledge(alert)
            metrics.ALERTS.labels(alert.modality, alert.state).inc()

    # -- dead letters ----------------------------------------------------------------------------------------

    def _dead_letter(self, tp: TopicPartition, record: ConsumerRecord, error: Exception) -> None:
        """Send one bad record to the dead-letter topic; its offset stays uncommitted until the broker has it."""
        value: bytes = record.value or b""
        try:
            payload, encoding = value.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(value).decode(), "base64"
        letter = DeadLetter(
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key else None,
            reason=str(error),
            error_type=type(error).__name__,
            payload=payload,
            payload_encoding=encoding,
            ts=time.time(),
        )
        self.ledger.hold(tp, record.offset)
        task = asyncio.create_task(self._send_dead_letter(tp, record.offset, letter))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_dead_letter(self, tp: TopicPartition, offset: int, letter: DeadLetter) -> None:
        try:
            await self._publish_dead_letter(letter)
        finally:
            self.ledger.release(tp, offset)

    async def _publish_dead_letter(self, letter: DeadLetter) -> None:
        assert self.producer is not None
        key = letter.key.encode() if letter.key else None
        await (await self.producer.send(self.settings.topics.dead_letter, letter.to_json(), key=key))
        metrics.DEAD_LETTERS.labels(letter.source_topic, letter.error_type).inc()
        log.warning("dead letter from %s@%s: %s", letter.source_topic, letter.offset, letter.reason)

    async def _dead_letter_item(
        self,
        tp: TopicPartition,
        trigger: ConsumerRecord,
        modality: Modality,
        stream: str,
        item: EmittedWindow | FrameStack,
        error: Exception,
    ) -> None:
        """A window or stack that cannot be scored: the dead letter carries the window (or stack header)."""
        if isinstance(item, EmittedWindow):
            payload = item.window.to_json().decode()
        else:
            payload = json.dumps({"camera": stream, "seq": item.seq, "ts": item.ts, "shape": list(item.frames.shape)})
        letter = DeadLetter(
            source_topic=trigger.topic,
            partition=trigger.partition,
            offset=trigger.offset,
            key=stream,
            reason=f"{modality} {stream}: {error}",
            error_type=type(error).__name__,
            payload=payload,
            ts=time.time(),
        )
        self.ledger.hold(tp, trigger.offset)
        await self._send_dead_letter(tp, trigger.offset, letter)

    # -- commits ---------------------------------------------------------------------------------------------

    def _buffered_offsets(self, tp: TopicPartition) -> list[int]:
        buffered = []
        for (modality, stream), partition in self._stream_partition.items():
            if partition != tp:
                continue
            state = self.windower if modality == "sensor" else self.frames
            ref = state.oldest_ref(stream) if state is not None else None
            if ref is not None:
                buffered.append(ref)
        return buffered

    async def _commit(self, partitions: list[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        offsets = {}
        for tp in partitions if partitions is not None else list(self.ledger.next_offset):
            offset = self.ledger.committable(tp, self._buffered_offsets(tp))
            if offset is not None and offset > self.ledger.committed.get(tp, -1):
                offsets[tp] = offset
        if offsets:
            await self.consumer.commit(offsets)
            self.ledger.committed.update(offsets)

    async def _commit_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stream.commit_interval_s)
            try:
                await self._commit()
            except Exception:  # a rebalance in progress or the broker away: the next round retries
                log.warning("commit failed; retrying", exc_info=True)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        revoked = set(partitions)
        for (modality, stream), tp in list(self._stream_partition.items()):
            if tp in revoked:
                state = self.windower if modality == "sensor" else self.frames
                if state is not None:
                    state.forget(stream)
                del self._stream_partition[(modality, stream)]
        for tp in revoked:
            self.ledger.forget(tp)

    def _observe_lag(self, tp: TopicPartition) -> None:
        assert self.consumer is not None
        # highwater() comes from fetch responses, so it is right even where tansu's ListOffsets(LATEST) is not.
        highwater = self.consumer.highwater(tp)
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(highwater - self.ledger.next_offset[tp])

    # -- health and metrics ----------------------------------------------------------------------------------

    async def _start_health_server(self) -> web.AppRunner:
        async def health(_: web.Request) -> web.Response:
            breaker = self.triton.breaker.state
            body = {
                "status": "ok" if self.ready.is_set() and breaker == "closed" else "degraded",
                "consuming": self.ready.is_set(),
                "triton_breaker": breaker,
                "in_flight": len(self._tasks),
                "topics": sorted(self.topology),
            }
            return web.json_response(body, status=200 if body["consuming"] else 503)

        async def prometheus(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.add_routes([web.get("/healthz", health), web.get("/metrics", prometheus)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.stream.metrics_host, self.settings.stream.metrics_port)
        await site.start()
        self.health_port = runner.addresses[0][1]
        return runner


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    stop = stop or asyncio.Event()
    await Worker(settings).run(stop)
