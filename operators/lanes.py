"""Lanes: everything that differs between the sensor and the video modality, behind one small interface.

A lane turns one consumed record into work items (windows, frame stacks), builds the scoring request of an item,
turns the model's answer into a :class:`Measurement`, and knows which offsets its buffered state still needs. The
engine (``operators.engine``) runs every lane the same way and never asks which modality it holds.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from aiokafka import ConsumerRecord, TopicPartition

from core import metrics
from core.contracts import FRAME_HEADER, ContractError, Modality, SensorReading, VideoFrame, decode
from core.settings import Settings, StreamSettings
from operators.batching import BatchFn, MicroBatcher
from operators.frames import FrameBuffer, FrameStack, decode_frame
from operators.model_cards import TsModelCard, VideoModelCard
from operators.ports import FrameObserver
from operators.thresholding import Thresholder
from operators.triton_stage import TsRequest, TsResult, VideoResult
from operators.windowing import EmittedWindow, SensorWindower

Payload = TypeVar("Payload")
Request = TypeVar("Request")
Result = TypeVar("Result")


@dataclass(frozen=True)
class WorkItem(Generic[Payload]):
    """One window or frame stack on its way to a score."""

    stream: str
    event_time: float  # the timestamp its score gets
    hold_offset: int  # the oldest offset a restart must re-read to rebuild it: held until it is stored
    payload: Payload
    flushed: bool = False  # made by releasing a quiet stream, not by a record: it has no produce-to-stored latency


@dataclass(frozen=True)
class Measurement:
    """What the model said of one item, before thresholding."""

    value: float
    contributions: dict[str, float]  # per channel (sensors); empty for video
    location: tuple[float, float] | None  # (row, column) of the worst patch in [0, 1] (video)


class Lane(Protocol[Payload, Request, Result]):
    modality: Modality
    topic: str
    model: str
    model_version: str
    thresholds: Thresholder
    batcher: MicroBatcher[Request, Result]

    def accept(self, tp: TopicPartition, record: ConsumerRecord) -> list[WorkItem[Payload]]:
        """Decode, validate and buffer one record; the items it completes. Raises ``ContractError`` on bad input."""
        ...

    def request(self, item: WorkItem[Payload]) -> Request: ...

    def measurement(self, item: WorkItem[Payload], result: Result) -> Measurement: ...

    def describe(self, item: WorkItem[Payload]) -> str:
        """The item as a dead letter's payload."""
        ...

    def buffered_offsets(self, tp: TopicPartition) -> list[int]:
        """The oldest offset each buffered stream of this partition still needs."""
        ...

    def forget(self, partitions: set[TopicPartition]) -> None: ...

    def release_idle(self) -> list[tuple[TopicPartition, ConsumerRecord, WorkItem[Payload]]]:
        """Flush the streams that went quiet (see ``StreamPartitions.quiet``): the items their buffers still make,
        with the partition and record each belongs to; afterwards they pin no offset."""
        ...


def check_future(stream: str, event_time: float, max_future_s: float) -> None:
    """An event time far ahead of the wall clock would stall its stream (every later message would look late)."""
    ahead = event_time - time.time()
    if ahead > max_future_s:
        raise ContractError(
            f"{stream!r}: event time {event_time} is {ahead:.0f} s ahead of the clock (max {max_future_s})"
        )


class ClockJumps:
    """Refuses a message whose event time jumps more than ``max_jump_s`` past its stream's newest one (a single
    reading from the far future would stall the stream), unless the stream's next message confirms the jump: two in a
    row, within ``max_jump_s`` of each other, mean the stream really moved on (a sensor back after a long outage)."""

    def __init__(self, max_jump_s: float) -> None:
        self.max_jump_s = max_jump_s
        self._refused: dict[str, float] = {}  # the last refused jump of each stream

    def check(self, stream: str, event_time: float, newest: float | None) -> None:
        if newest is None or event_time - newest <= self.max_jump_s:
            self._refused.pop(stream, None)
            return
        previous = self._refused.pop(stream, None)
        if previous is not None and abs(event_time - previous) <= self.max_jump_s:
            return
        self._refused[stream] = event_time
        raise ContractError(
            f"{stream!r}: event time {event_time} is {event_time - newest:.0f} s after the stream's newest message "
            f"(max jump {self.max_jump_s} s, unless its next message confirms it)"
        )


def _hold(record: ConsumerRecord, oldest_ref: int | None) -> int:
    return record.offset if oldest_ref is None else oldest_ref


def _window_items(
    record: ConsumerRecord, windows: list[EmittedWindow], flushed: bool = False
) -> list[WorkItem[EmittedWindow]]:
    return [WorkItem(w.asset, w.end_time, _hold(record, w.oldest_ref), w, flushed) for w in windows]


def check_key(record: ConsumerRecord, stream: str) -> None:
    """Windows and frame stacks need all of a stream's messages in one partition, in order: the key is the stream."""
    if record.key != stream.encode():
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        raise ContractError(f"message of {stream!r} keyed {key!r}: readings and frames must be keyed by asset/camera")


class AssetRegistry:
    """Admitted asset ids: glob patterns from ``sensors.assets``, else the sensor model card's streams, else all."""

    def __init__(self, patterns: list[str], card_streams: tuple[str, ...]) -> None:
        self.patterns = list(patterns) or list(card_streams) or ["*"]
        self._known: dict[str, bool] = {}

    def admits(self, asset: str) -> bool:
        if asset not in self._known:
            self._known[asset] = any(fnmatch.fnmatchcase(asset, pattern) for pattern in self.patterns)
        return self._known[asset]


class BufferedState(Protocol):
    """A lane's per-stream buffer (windows being built, frame contexts)."""

    def oldest_ref(self, stream: str) -> int | None: ...

    def forget(self, stream: str) -> None: ...


class StreamPartitions:
    """Which partition each stream of a lane was last read from, its newest event time and its last record, so that a
    partition's buffered offsets, its revocation and its quiet streams reach exactly its streams."""

    def __init__(self, state: BufferedState) -> None:
        self.state = state
        self.of_stream: dict[str, TopicPartition] = {}
        self.last_record: dict[str, ConsumerRecord] = {}
        self.newest: dict[str, float] = {}  # event time of each stream's newest message
        self.clock: dict[TopicPartition, float] = {}  # newest event time of any stream of the partition

    def seen(self, stream: str, tp: TopicPartition, record: ConsumerRecord, event_time: float) -> None:
        self.of_stream[stream], self.last_record[stream] = tp, record
        self.newest[stream] = max(event_time, self.newest.get(stream, event_time))
        self.clock[tp] = max(event_time, self.clock.get(tp, event_time))

    def buffered_offsets(self, tp: TopicPartition) -> list[int]:
        refs = (self.state.oldest_ref(stream) for stream, owner in self.of_stream.items() if owner == tp)
        return [ref for ref in refs if ref is not None]

    def quiet(self, after_s: float) -> list[str]:
        """Streams whose partition's event time moved ``after_s`` past their newest message."""
        return [s for s, tp in self.of_stream.items() if self.clock[tp] - self.newest[s] > after_s]

    def release(self, stream: str) -> tuple[TopicPartition, ConsumerRecord]:
        """Forget a stream here (its buffer is the caller's); the partition and record it was last seen at."""
        del self.newest[stream]
        return self.of_stream.pop(stream), self.last_record.pop(stream)

    def forget(self, partitions: set[TopicPartition]) -> None:
        for stream in [stream for stream, tp in self.of_stream.items() if tp in partitions]:
            self.state.forget(stream)
            self.release(stream)
        for tp in partitions:
            self.clock.pop(tp, None)


def _batcher(stream: StreamSettings, score_batch: BatchFn[Request, Result]) -> MicroBatcher[Request, Result]:
    return MicroBatcher(score_batch, stream.max_batch, stream.max_wait_ms / 1000, stream.max_concurrency)


class SensorLane:
    modality: Modality = "sensor"

    def __init__(self, settings: Settings, card: TsModelCard, score_batch: BatchFn[TsRequest, TsResult]) -> None:
        sensors, stream = settings.sensors, settings.stream
        self.topic, self.card, self.sensors = settings.topics.sensor_readings, card, sensors
        self.max_future_s = stream.max_future_s
        self.mode = sensors.mode or card.default_mode
        self.model, self.model_version = settings.triton.ts_model, card.version or settings.triton.ts_model_version
        self.assets = AssetRegistry(sensors.assets, card.streams)
        self.windower = SensorWindower(
            card.channels, card.window, card.stride, card.sample_period_s,
            sensors.allowed_lateness, sensors.min_observed_fraction,
        )  # fmt: skip
        self.thresholds = Thresholder(
            card.threshold(self.mode), stream.threshold, card.streams, sensors.learning_windows
        )
        self.batcher = _batcher(stream, score_batch)
        self.partitions = StreamPartitions(self.windower)
        self.jumps = ClockJumps(sensors.max_clock_jump_s)
        self.idle_after_s = sensors.idle_after_windows * card.window * card.sample_period_s

    def accept(self, tp: TopicPartition, record: ConsumerRecord) -> list[WorkItem[EmittedWindow]]:
        reading = decode(SensorReading, record.value)
        check_key(record, reading.asset)
        if not self.assets.admits(reading.asset):
            raise ContractError(
                f"unknown asset {reading.asset!r}: not in the asset registry {self.assets.patterns} (sensors.assets)"
            )
        check_future(reading.asset, reading.event_time, self.max_future_s)
        self.jumps.check(reading.asset, reading.event_time, self.partitions.newest.get(reading.asset))
        windows = self.windower.add(reading, ref=record.offset)
        self.partitions.seen(reading.asset, tp, record, reading.event_time)
        self._count_drops()
        return _window_items(record, windows)

    def _count_drops(self) -> None:
        if self.windower.late_readings:
            metrics.LATE.labels(self.modality).inc(self.windower.late_readings)
            self.windower.late_readings = 0
        if self.windower.skipped_windows:
            metrics.SKIPPED.inc(self.windower.skipped_windows)
            self.windower.skipped_windows = 0

    def request(self, item: WorkItem[EmittedWindow]) -> TsRequest:
        return TsRequest(item.stream, item.payload.values, self.mode)

    def measurement(self, item: WorkItem[EmittedWindow], result: TsResult) -> Measurement:
        contributions = dict(zip(self.card.channels, map(float, result.channel_scores), strict=True))
        return Measurement(result.score, contributions, None)

    def describe(self, item: WorkItem[EmittedWindow]) -> str:
        return item.payload.window.to_json().decode()

    def buffered_offsets(self, tp: TopicPartition) -> list[int]:
        return self.partitions.buffered_offsets(tp)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self.partitions.forget(partitions)

    def release_idle(self) -> list[tuple[TopicPartition, ConsumerRecord, WorkItem[EmittedWindow]]]:
        released = []
        for asset in self.partitions.quiet(self.idle_after_s):
            windows = self.windower.flush(asset)
            tp, record = self.partitions.release(asset)
            metrics.RELEASED.labels(self.modality).inc()
            released += [(tp, record, item) for item in _window_items(record, windows, flushed=True)]
        self._count_drops()
        return released


class VideoLane:
    modality: Modality = "video"

    def __init__(
        self,
        settings: Settings,
        card: VideoModelCard,
        score_batch: BatchFn[np.ndarray, VideoResult],
        observer: FrameObserver | None = None,
    ) -> None:
        self.topic, self.card = settings.topics.video_frames, card
        self.observer = observer  # sees each scored frame with its map (the console's camera gallery)
        self.max_future_s, self.idle_after_s = settings.stream.max_future_s, settings.video.idle_after_s
        self.model = settings.triton.video_model
        self.model_version = card.version or settings.triton.video_model_version
        self.frames = FrameBuffer(card.context)
        self.thresholds = Thresholder(card.threshold, settings.stream.threshold)
        self.batcher = _batcher(settings.stream, score_batch)
        self.partitions = StreamPartitions(self.frames)

    def accept(self, tp: TopicPartition, record: ConsumerRecord) -> list[WorkItem[FrameStack]]:
        header = dict(record.headers or ()).get(FRAME_HEADER)
        if header is None:
            raise ContractError(f"frame without the {FRAME_HEADER!r} header")
        frame = decode(VideoFrame, header)
        check_key(record, frame.camera)
        check_future(frame.camera, frame.event_time, self.max_future_s)
        image = decode_frame(frame, record.value or b"", self.card.height, self.card.width)
        stale = self.frames.stale_frames
        stack = self.frames.add(frame, image, ref=record.offset)
        self.partitions.seen(frame.camera, tp, record, frame.event_time)
        if self.frames.stale_frames > stale:
            metrics.LATE.labels(self.modality).inc()
        if stack is None:
            return []
        return [WorkItem(stack.camera, stack.event_time, _hold(record, stack.oldest_ref), stack)]

    def request(self, item: WorkItem[FrameStack]) -> np.ndarray:
        return item.payload.frames

    def measurement(self, item: WorkItem[FrameStack], result: VideoResult) -> Measurement:
        if self.observer is not None:
            self.observer.observe_frame(item.stream, item.event_time, item.payload.frames[-1], result.map)
        rows, columns = result.map.shape
        y, x = np.unravel_index(int(np.argmax(result.map)), result.map.shape)
        return Measurement(result.score, {}, (float((y + 0.5) / rows), float((x + 0.5) / columns)))

    def describe(self, item: WorkItem[FrameStack]) -> str:
        stack = item.payload
        return json.dumps(
            {
                "camera": stack.camera,
                "seq": stack.seq,
                "event_time": stack.event_time,
                "shape": list(stack.frames.shape),
            }
        )

    def buffered_offsets(self, tp: TopicPartition) -> list[int]:
        return self.partitions.buffered_offsets(tp)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self.partitions.forget(partitions)

    def release_idle(self) -> list[tuple[TopicPartition, ConsumerRecord, WorkItem[FrameStack]]]:
        """A quiet camera's context is dropped: its next frames rebuild it (no stack is scored from stale context)."""
        for camera in self.partitions.quiet(self.idle_after_s):
            self.frames.forget(camera)
            self.partitions.release(camera)
            metrics.RELEASED.labels(self.modality).inc()
        return []
