"""The scoring engine: what the worker does to every record, for every lane, without knowing Kafka, Triton or the store.

    source --> lane.accept (decode, validate, window / frame stack) --> micro-batched scoring (lane.batcher)
           --> threshold (per stream, in emission order) --> alerts --> store + scores/alerts topics --> commit
    anything invalid or permanently unscorable --> dead-letter topic, with the reason

The clients are ports (``operators.ports``): production passes Kafka, Triton and InfluxDB adapters, unit tests pass
in-memory fakes. Offsets: a record's offset is committed only once everything it fed is stored (``OffsetLedger``).
Delivery is at least once: after a crash the worker re-reads from the committed offsets, rebuilds its lanes' state
and re-scores what was in flight; scores carry event-time timestamps, so the store overwrites instead of duplicating.
While Triton or the store is down, work waits (retries behind a circuit breaker); when ``stream.max_in_flight``
items are waiting, the loop stops fetching. Nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from core import metrics
from core.contracts import Alert, ContractError, DeadLetter, Score
from core.settings import Settings
from operators.dead_letters import item_dead_letter, record_dead_letter
from operators.influx_sink import alert_point, score_point
from operators.lanes import Lane, WorkItem
from operators.offsets import OffsetLedger, StreamOrder
from operators.ports import AlertObserver, PointSink, Publisher, RecordSource
from operators.triton_stage import PermanentScoringError

log = logging.getLogger("diffsentry.worker")


class StreamEngine:
    def __init__(
        self,
        settings: Settings,
        lanes: list[Lane[Any, Any, Any]],
        source: RecordSource,
        publisher: Publisher,
        sink: PointSink,
    ) -> None:
        self.settings, self.source, self.publisher, self.sink = settings, source, publisher, sink
        self.lanes = {lane.topic: lane for lane in lanes}
        self.alerts: AlertObserver | None = None
        self.ledger = OffsetLedger()
        self.order = StreamOrder()
        self._in_flight = asyncio.Semaphore(settings.stream.max_in_flight)
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()
        self._stopped = False
        self._deadline = math.inf  # of the shutdown grace

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and the producer: dead letters can be published from here on."""
        await self.sink.start()
        await self.publisher.start()

    async def run(self, alerts: AlertObserver, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain what is in flight and commit."""
        self.alerts = alerts
        for alert in alerts.recover():  # emitted by a previous run but never published: before anything new
            await self._emit_alerts([alert])
        await self.source.start(list(self.lanes), on_revoked=self._on_revoked)
        committer = asyncio.create_task(self._commit_forever(), name="committer")
        try:
            await self._consume(stop)
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await self._drain()

    async def close(self) -> None:
        remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
        await self.publisher.stop()
        await self.sink.aclose(timeout_s=remaining)

    async def _consume(self, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            fetch = asyncio.create_task(self.source.fetch(timeout_ms=200))
            await asyncio.wait({fetch, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
                break
            self.ready.set()
            for tp, records in fetch.result().items():
                for record in records:
                    self.ledger.consumed(tp, record.offset)
                    metrics.MESSAGES.labels(tp.topic).inc()
                    await self._accept(self.lanes[tp.topic], tp, record)
                self._observe_lag(tp)
        stopping.cancel()

    async def _drain(self) -> None:
        """Within ``stream.shutdown_grace_s``: score what the batchers hold, wait for the store, commit, stop reading.
        Work not done by then (Triton or the store away) is cancelled uncommitted: the next start reads it again."""
        grace = self.settings.stream.shutdown_grace_s
        self._deadline = asyncio.get_running_loop().time() + grace
        flushes = [asyncio.create_task(lane.batcher.aclose()) for lane in self.lanes.values()]
        await asyncio.wait({*flushes, *self._tasks}, timeout=grace)
        with contextlib.suppress(Exception):
            await self._commit()
        self._stopped = True  # no commit from here on: cancelled work releases offsets it never finished
        unfinished = [task for task in (*flushes, *self._tasks) if not task.done()]
        if unfinished:
            log.warning("shutdown grace over: %d items left unfinished, uncommitted", len(unfinished))
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*flushes, *self._tasks, return_exceptions=True)
        await self.source.stop()

    # -- one record, one item --------------------------------------------------------------------------------

    async def _accept(self, lane: Lane[Any, Any, Any], tp: TopicPartition, record: ConsumerRecord) -> None:
        try:
            items = lane.accept(tp, record)
        except Exception as error:  # ContractError: bad input; anything else: a bug this record found. Never a crash.
            if not isinstance(error, ContractError):
                log.exception("unexpected failure decoding %s@%s", record.topic, record.offset)
            self.ledger.hold(tp, record.offset)  # now, not when the task runs: a commit must not pass it meanwhile
            self._spawn(
                self._send_dead_letter(
                    tp, record.offset, record_dead_letter(record, error, self.settings.stream.dead_letter_max_payload)
                )
            )
            return
        for item in items:
            await self._submit(lane, tp, record, item)

    async def _submit(
        self, lane: Lane[Any, Any, Any], tp: TopicPartition, record: ConsumerRecord, item: WorkItem[Any]
    ) -> None:
        await self._in_flight.acquire()  # backpressure: stop reading while too much waits for Triton or the store
        self.ledger.hold(tp, item.hold_offset)
        metrics.WINDOWS.labels(lane.modality).inc()
        metrics.IN_FLIGHT.inc()
        self._spawn(self._process(lane, tp, record, item, *self.order.enter(item.stream)))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(
        self,
        lane: Lane[Any, Any, Any],
        tp: TopicPartition,
        trigger: ConsumerRecord,
        item: WorkItem[Any],
        previous: asyncio.Future[None] | None,
        mine: asyncio.Future[None],
    ) -> None:
        try:
            measured = lane.measurement(item, await lane.batcher.submit(lane.request(item)))
            if previous is not None:
                await previous
            decision = lane.thresholds.apply(item.stream, measured.value)
            score = Score(
                modality=lane.modality,
                stream=item.stream,
                event_time=item.event_time,
                score=measured.value,
                threshold=decision.threshold,
                is_anomaly=decision.is_anomaly,
                model=lane.model,
                model_version=lane.model_version,
                contributions=measured.contributions,
                location=measured.location,
                produced_at=trigger.timestamp / 1000,
            )
            assert self.alerts is not None
            if decision.learning:  # a stream the model does not know yet: written, but it raises no alert
                metrics.LEARNING.labels(lane.modality).inc()
            alerts = [] if decision.learning else self.alerts.observe(score)
            self.order.leave(item.stream, mine)
            await self._emit(score, alerts)
            metrics.SCORES.labels(lane.modality, str(decision.is_anomaly).lower()).inc()
            if not item.flushed:
                metrics.END_TO_END.labels(lane.modality).observe(max(0.0, time.time() - trigger.timestamp / 1000))
        except Exception as error:  # unscorable (PermanentScoringError) or a bug: keep running, keep the evidence
            if not isinstance(error, PermanentScoringError):
                log.exception("unexpected failure on %s %s", lane.modality, item.stream)
            if previous is not None:
                await previous
            self.order.leave(item.stream, mine)
            max_payload = self.settings.stream.dead_letter_max_payload
            letter = item_dead_letter(trigger, lane.modality, item.stream, lane.describe(item), error, max_payload)
            self.ledger.hold(tp, trigger.offset)
            await self._send_dead_letter(tp, trigger.offset, letter)
        finally:
            self.ledger.release(tp, item.hold_offset)
            metrics.IN_FLIGHT.dec()
            self._in_flight.release()

    async def _emit(self, score: Score, alerts: list[Alert]) -> None:
        """Score and alerts to the store and their topics; returns once all are acknowledged."""
        written = self.sink.write([score_point(score, self.settings.sensors.top_channels)])
        sent = await self.publisher.send(self.settings.topics.scores, score.to_json(), key=score.stream.encode())
        await asyncio.gather(written, sent, self._emit_alerts(alerts))

    async def _emit_alerts(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        assert self.alerts is not None
        written = self.sink.write([alert_point(alert) for alert in alerts])
        topic = self.settings.topics.alerts
        sends = [await self.publisher.send(topic, alert.to_json(), key=alert.stream.encode()) for alert in alerts]
        await asyncio.gather(written, *sends)
        for alert in alerts:
            self.alerts.acknowledge(alert)
            metrics.ALERTS.labels(alert.modality, alert.state).inc()

    # -- dead letters ----------------------------------------------------------------------------------------

    async def _send_dead_letter(self, tp: TopicPartition, offset: int, letter: DeadLetter) -> None:
        """The caller holds ``offset``: it stays uncommitted until the broker has the letter."""
        try:
            await self.publish_dead_letter(letter)
        finally:
            self.ledger.release(tp, offset)

    async def publish_dead_letter(self, letter: DeadLetter) -> None:
        key = letter.key.encode() if letter.key else None
        await (await self.publisher.send(self.settings.topics.dead_letter, letter.to_json(), key=key))
        metrics.DEAD_LETTERS.labels(letter.source_topic, letter.error_type).inc()
        log.warning("dead letter from %s@%s: %s", letter.source_topic, letter.offset, letter.reason)

    # -- commits ---------------------------------------------------------------------------------------------

    def _buffered(self, partitions: list[TopicPartition]) -> dict[TopicPartition, list[int]]:
        return {tp: self.lanes[tp.topic].buffered_offsets(tp) for tp in partitions if tp.topic in self.lanes}

    async def _commit(self, partitions: list[TopicPartition] | None = None) -> None:
        offsets = self.ledger.to_commit(
            self._buffered(list(self.ledger.next_offset) if partitions is None else partitions)
        )
        if offsets:
            await self.source.commit(offsets)
            self.ledger.committed.update(offsets)

    async def _commit_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.stream.commit_interval_s)
            try:
                for lane in self.lanes.values():  # quiet streams stop pinning their partition's offset
                    for tp, record, item in lane.release_idle():
                        await self._submit(lane, tp, record, item)
                await self._commit()
            except Exception:  # a rebalance in progress or the broker away: the next round retries; never stop here
                log.warning("commit round failed; retrying", exc_info=True)

    async def _on_revoked(self, revoked: list[TopicPartition]) -> None:
        if not self._stopped:
            await self._commit(revoked)
        for lane in self.lanes.values():
            lane.forget(set(revoked))
        for tp in revoked:
            self.ledger.forget(tp)

    def _observe_lag(self, tp: TopicPartition) -> None:
        highwater = self.source.highwater(tp)
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(highwater - self.ledger.next_offset[tp])
