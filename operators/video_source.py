"""Video sources without a broker: decoding (PyAV or Pillow), rate sampling, reconnect backoff, frame encoding.

Frame encoding (measured on Ped2 frames at the model's 144x96 grayscale, one core):
- raw uint8: 13,824 bytes per frame, no CPU, lossless;
- JPEG quality 90: ~3,640 bytes, ~0.2 ms to encode and ~0.1 ms to decode, mean absolute error 1.4 grey levels
  (quality 75: ~2,290 bytes, error 2.3).
At model resolution a raw frame is small for Kafka (~140 KB/s per camera at 10 fps), costs the scorer nothing to
decode, and the pixels the model sees are the pixels ingested, so raw is the default; JPEG is there for links where
bytes matter more than a few grey levels of error (the scorer's noise floor).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image

from operators.resilience import Backoff
from triton_models.video.frames import frame_files, to_model_frame

log = logging.getLogger(__name__)

Encoding = Literal["raw", "jpeg"]


@dataclass(frozen=True)
class SourceFrame:
    """One decoded frame: the picture and its time in seconds from the start of the source."""

    image: Image.Image
    pts: float


@dataclass
class SourceStats:
    decoded: int = 0
    sampled: int = 0
    corrupt: int = 0
    reconnects: int = 0


class SourceUnavailable(RuntimeError):
    """The source failed more times in a row than the backoff allows."""


def is_stream_url(source: str) -> bool:
    return "://" in source


def iter_container(source: str, stats: SourceStats, open_timeout_s: float = 10.0) -> Iterator[SourceFrame]:
    """Decode the first video stream of a file or URL with PyAV; packets that fail to decode are counted, skipped."""
    options = {"rtsp_transport": "tcp"} if source.startswith("rtsp://") else {}
    with av.open(source, options=options, timeout=open_timeout_s) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        index = 0
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.error.InvalidDataError:
                stats.corrupt += 1
                continue
            for frame in frames:
                pts = float(frame.time) if frame.time is not None else index / rate
                index += 1
                stats.decoded += 1
                yield SourceFrame(frame.to_image(), pts)


def iter_folder(folder: Path, fps: float, stats: SourceStats) -> Iterator[SourceFrame]:
    """Sorted image files of a folder as consecutive frames at ``fps``; unreadable files are counted, skipped."""
    for index, path in enumerate(frame_files(folder)):
        try:
            with Image.open(path) as image:
                image.load()  # decode now: a truncated or corrupt file raises here, not later
                picture = image.copy()
        except (OSError, SyntaxError, ValueError) as error:
            stats.corrupt += 1
            log.warning("skipping unreadable frame %s: %s", path, error)
            continue
        stats.decoded += 1
        yield SourceFrame(picture, index / fps)


class RateSampler:
    """Keeps frames on a grid of 1/fps seconds in source time: 30 fps sampled at 10 keeps every third frame.

    A frame is kept when its time reaches the next slot; after a gap the grid restarts at the frame, so a stall
    does not cause a burst of catch-up frames. ``fps=None`` keeps every frame.
    """

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self.next_due: float | None = None

    def accept(self, pts: float) -> bool:
        if self.period == 0.0:
            return True
        tolerance = 1e-3 * self.period
        if self.next_due is not None and pts + tolerance < self.next_due:
            return False
        due = pts if self.next_due is None else self.next_due
        self.next_due = due + self.period
        if self.next_due <= pts:
            self.next_due = pts + self.period
        return True

    def reset(self) -> None:
        self.next_due = None


# 8 reconnects over about 90 s (0.5, 1, 2 ... 30 s) before a source counts as gone.
RECONNECT_BACKOFF = Backoff(initial_s=0.5, max_s=30.0, jitter=0.0, max_attempts=9)


@dataclass
class ResilientSource:
    """Reopens a failing source with the project's backoff (``operators.resilience``) until ``backoff.max_attempts``
    failures in a row. A frame received resets the count, so a stream that keeps delivering between drops is never
    given up on; a retried call (``call_with_retry``) has no such reset, hence this loop of its own.

    ``open_source`` returns a fresh frame iterator. A file ends the run at its end unless ``loop``; a live stream
    (``live=True``) that ends is treated as a disconnect and reopened.
    """

    open_source: Callable[[], Iterator[SourceFrame]]
    stats: SourceStats
    backoff: Backoff = RECONNECT_BACKOFF
    loop: bool = False
    live: bool = False
    sleep: Callable[[float], None] = time.sleep
    retryable: tuple[type[BaseException], ...] = (OSError, av.error.FFmpegError)

    def __iter__(self) -> Iterator[SourceFrame]:
        failures = 0
        offset = 0.0  # source time keeps increasing across loops and reconnects
        while True:
            last_pts = None
            try:
                for frame in self.open_source():
                    failures = 0
                    last_pts = frame.pts
                    yield SourceFrame(frame.image, offset + frame.pts)
                if last_pts is None:
                    raise OSError("source produced no frames")
                if not (self.loop or self.live):
                    return
            except self.retryable as error:
                failures += 1
                if self.backoff.exhausted(failures):
                    raise SourceUnavailable(f"gave up after {failures} failures in a row: {error}") from error
                delay = self.backoff.delay(failures)
                log.warning("source failed (%s); reconnect %d in %.1f s", error, failures, delay)
                self.stats.reconnects += 1
                self.sleep(delay)
            if last_pts is not None:
                offset += last_pts + 1e-3


def encode_frame(frame: np.ndarray, encoding: Encoding, jpeg_quality: int = 90) -> bytes:
    """A grayscale uint8 frame as a VideoFrame payload (``operators.frames.decode_frame`` is the inverse)."""
    if encoding == "raw":
        return np.ascontiguousarray(frame, dtype=np.uint8).tobytes()
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue()


def sampled_model_frames(
    frames: Iterator[SourceFrame], fps: float | None, width: int, height: int, stats: SourceStats
) -> Iterator[tuple[float, np.ndarray]]:
    """Rate-sample and convert to the model's grayscale resolution: (source time, [height, width] uint8)."""
    sampler = RateSampler(fps)
    for frame in frames:
        if sampler.accept(frame.pts):
            stats.sampled += 1
            yield frame.pts, to_model_frame(frame.image, width, height)


def write_synthetic_clip(path: Path, frames: int, fps: int = 30, size: tuple[int, int] = (160, 96)) -> None:
    """An MPEG-4 clip of a bright square moving over a gradient (for demos and tests without a camera)."""
    width, height = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for index in range(frames):
            image = np.tile(np.linspace(0, 200, width, dtype=np.uint8), (height, 1))
            left = 4 * index % (width - 20)
            image[20:40, left : left + 20] = 255
            frame = av.VideoFrame.from_ndarray(np.stack([image] * 3, axis=-1), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
