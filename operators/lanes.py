"""Lanes: everything that differs between the sensor and the video modality, behind one small interface.

A lane turns one consumed record into work items (windows, frame stacks), builds the scoring request of an item,
turns the model's answer into a :class:`Measurement`, and knows which offsets its buffered state still needs. The
engine (``operators.engine``) runs every lane the same way and never asks which modality it holds.
"""

from __future__ import annotations

import fnmatch
import json
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
from operators.thresholding import ThresholdConfig, Thresholder
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


def _hold(record: ConsumerRecord, oldest_ref: int | None) -> int:
    return record.offset if oldest_ref is None else oldest_ref


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
    """Which partition each stream of a lane was last read from, so a partition's buffered offsets and its
    revocation reach exactly its streams."""

    def __init__(self, state: BufferedState) -> None:
        self.state = state
        self.of_stream: dict[str, TopicPartition] = {}

    def buffered_offsets(self, tp: TopicPartition) -> list[int]:
        refs = (self.state.oldest_ref(stream) for stream, owner in self.of_stream.items() if owner == tp)
        return [ref for ref in refs if ref is not None]

    def forget(self, partitions: set[TopicPartition]) -> None:
        for stream in [stream for stream, tp in self.of_stream.items() if tp in partitions]:
            self.state.forget(stream)
            del self.of_stream[stream]


def _batcher(stream: StreamSettings, score_batch: BatchFn[Request, Result]) -> MicroBatcher[Request, Result]:
    return MicroBatcher(score_batch, stream.max_batch, stream.max_wait_ms / 1000, stream.max_concurrency)


class SensorLane:
    modality: Modality = "sensor"

    @classmethod
    def from_card(cls, settings: Settings, card: TsModelCard, score_batch: BatchFn[TsRequest, TsResult]) -> SensorLane:
        sensors, model = settings.sensors, settings.triton.ts_model
        mode = sensors.mode or card.default_mode
        windower = SensorWindower(
            card.channels, card.window, card.stride, card.sample_period_s,
            sensors.allowed_lateness, sensors.min_observed_fraction,
        )  # fmt: skip
        thresholds = Thresholder(card.threshold(mode), ThresholdConfig(**settings.stream.threshold.model_dump()))
        return cls(
            settings.topics.sensor_readings, card, mode, AssetRegistry(sensors.assets, card.streams), windower,
            thresholds, _batcher(settings.stream, score_batch), model, card.version or settings.triton.ts_model_version,
        )  # fmt: skip

    def __init__(
        self,
        topic: str,
        card: TsModelCard,
        mode: str,
        assets: AssetRegistry,
        windower: SensorWindower,
        thresholds: Thresholder,
        batcher: MicroBatcher[TsRequest, TsResult],
        model: str,
        model_version: str,
    ) -> None:
        self.topic, self.card, self.mode, self.assets = topic, card, mode, assets
        self.windower, self.thresholds, self.batcher = windower, thresholds, batcher
        self.model, self.model_version = model, model_version
        self.partitions = StreamPartitions(windower)

    def accept(self, tp: TopicPartition, record: ConsumerRecord) -> list[WorkItem[EmittedWindow]]:
        reading = decode(SensorReading, record.value)
        check_key(record, reading.asset)
        if not self.assets.admits(reading.asset):
            raise ContractError(
                f"unknown asset {reading.asset!r}: not in the asset registry {self.assets.patterns} (sensors.assets)"
            )
        windows = self.windower.add(reading, ref=record.offset)
        self.partitions.of_stream[reading.asset] = tp
        if self.windower.late_readings:
            metrics.LATE.labels(self.modality).inc(self.windower.late_readings)
            self.windower.late_readings = 0
        return [
            WorkItem(
                window.asset, window.end_ts, record.offset if window.oldest_ref is None else window.oldest_ref, window
            )
            for window in windows
        ]

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


class VideoLane:
    modality: Modality = "video"

    @classmethod
    def from_card(
        cls, settings: Settings, card: VideoModelCard, score_batch: BatchFn[np.ndarray, VideoResult]
    ) -> VideoLane:
        thresholds = Thresholder(card.threshold, ThresholdConfig(**settings.stream.threshold.model_dump()))
        version = card.version or settings.triton.video_model_version
        return cls(
            settings.topics.video_frames, card, FrameBuffer(card.context), thresholds,
            _batcher(settings.stream, score_batch), settings.triton.video_model, version,
        )  # fmt: skip

    def __init__(
        self,
        topic: str,
        card: VideoModelCard,
        frames: FrameBuffer,
        thresholds: Thresholder,
        batcher: MicroBatcher[np.ndarray, VideoResult],
        model: str,
        model_version: str,
    ) -> None:
        self.topic, self.card, self.frames = topic, card, frames
        self.thresholds, self.batcher = thresholds, batcher
        self.model, self.model_version = model, model_version
        self.partitions = StreamPartitions(frames)

    def accept(self, tp: TopicPartition, record: ConsumerRecord) -> list[WorkItem[FrameStack]]:
        header = dict(record.headers or ()).get(FRAME_HEADER)
        if header is None:
            raise ContractError(f"frame without the {FRAME_HEADER!r} header")
        frame = decode(VideoFrame, header)
        check_key(record, frame.camera)
        image = decode_frame(frame, record.value or b"", self.card.height, self.card.width)
        self.partitions.of_stream[frame.camera] = tp
        stale = self.frames.stale_frames
        stack = self.frames.add(frame, image, ref=record.offset)
        if self.frames.stale_frames > stale:
            metrics.LATE.labels(self.modality).inc()
        if stack is None:
            return []
        return [WorkItem(stack.camera, stack.ts, _hold(record, stack.oldest_ref), stack)]

    def request(self, item: WorkItem[FrameStack]) -> np.ndarray:
        return item.payload.frames

    def measurement(self, item: WorkItem[FrameStack], result: VideoResult) -> Measurement:
        rows, columns = result.map.shape
        y, x = np.unravel_index(int(np.argmax(result.map)), result.map.shape)
        return Measurement(result.score, {}, (float((y + 0.5) / rows), float((x + 0.5) / columns)))

    def describe(self, item: WorkItem[FrameStack]) -> str:
        stack = item.payload
        return json.dumps({"camera": stack.camera, "seq": stack.seq, "ts": stack.ts, "shape": list(stack.frames.shape)})

    def buffered_offsets(self, tp: TopicPartition) -> list[int]:
        return self.partitions.buffered_offsets(tp)

    def forget(self, partitions: set[TopicPartition]) -> None:
        self.partitions.forget(partitions)
