"""Video frames -> per-camera stacks of the last K context frames plus the current one.

- Payloads are decoded to grayscale uint8 ``[H, W]`` at the model's size: JPEG through Pillow (a payload Pillow
  cannot decode is a :class:`ContractError`), raw as row-major ``height x width x channels`` bytes (a length that
  does not match the header is a ContractError). Colour frames are converted to luminance; frames of another size
  are resized (bilinear) to the model card's ``height`` x ``width``.
- Frame size: the header's ``width`` x ``height`` is bounded by the contract (``MAX_FRAME_SIDE``,
  ``MAX_FRAME_PIXELS``), and the payload must be that size: a JPEG whose own header claims another size is a
  ContractError before any pixel is decoded, so a small payload cannot make the worker allocate a huge image
  (Pillow's ``DecompressionBombError`` is one too).
- Each camera keeps its last ``K + 1`` frames. Every frame that finds ``K`` frames before it emits one
  ``[K + 1, H, W]`` stack whose last frame is the scored one.
- Ordering by ``seq``: a frame whose seq is not newer than the newest buffered frame (re-delivery or reordering) is
  dropped and counted; a jump in seq (missing frames) restarts the camera's context, because a stack must show
  consecutive frames.

Buffered frames keep an opaque ``ref`` (Kafka offset); :meth:`FrameBuffer.oldest_ref` tells what a restart must
re-read to rebuild the context.
"""

from __future__ import annotations

import io
from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.contracts import ContractError, VideoFrame


def decode_frame(frame: VideoFrame, payload: bytes, height: int, width: int) -> np.ndarray:
    """Image bytes -> grayscale uint8 [height, width]."""
    if frame.encoding == "jpeg":
        try:
            image = Image.open(io.BytesIO(payload), formats=["JPEG"])  # reads the header only
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
            raise ContractError(f"camera {frame.camera!r} seq {frame.seq}: corrupt JPEG: {error}") from error
        with image:
            if image.size != (frame.width, frame.height):
                raise ContractError(
                    f"camera {frame.camera!r} seq {frame.seq}: JPEG of {image.width}x{image.height} pixels, "
                    f"the frame header declares {frame.width}x{frame.height}"
                )
            try:
                image.load()
                gray = image.convert("L")
            except (OSError, ValueError) as error:
                raise ContractError(f"camera {frame.camera!r} seq {frame.seq}: corrupt JPEG: {error}") from error
    else:
        expected = frame.height * frame.width * frame.channels
        if len(payload) != expected:
            raise ContractError(
                f"camera {frame.camera!r} seq {frame.seq}: raw frame has {len(payload)} bytes, expected {expected} "
                f"({frame.height}x{frame.width}x{frame.channels})"
            )
        pixels = np.frombuffer(payload, dtype=np.uint8).reshape(frame.height, frame.width, frame.channels)
        gray = Image.fromarray(pixels[:, :, 0] if frame.channels == 1 else pixels).convert("L")
    if gray.size != (width, height):
        gray = gray.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


@dataclass(frozen=True)
class FrameStack:
    camera: str
    seq: int
    event_time: float
    frames: np.ndarray  # uint8 [K + 1, H, W], the scored frame last
    oldest_ref: int | None


@dataclass
class _Camera:
    frames: deque[tuple[int, np.ndarray, int | None]]


class FrameBuffer:
    def __init__(self, context: int) -> None:
        self.context = context
        self._cameras: dict[str, _Camera] = {}
        self.stale_frames = 0
        self.context_resets = 0

    def add(self, frame: VideoFrame, image: np.ndarray, ref: int | None = None) -> FrameStack | None:
        camera = self._cameras.setdefault(frame.camera, _Camera(deque(maxlen=self.context + 1)))
        if camera.frames:
            newest_seq = camera.frames[-1][0]
            if frame.seq <= newest_seq:
                self.stale_frames += 1
                return None
            if frame.seq != newest_seq + 1:
                self.context_resets += 1
                camera.frames.clear()
        camera.frames.append((frame.seq, image, ref))
        if len(camera.frames) <= self.context:
            return None
        refs = [ref for _, _, ref in camera.frames if ref is not None]
        return FrameStack(
            camera=frame.camera,
            seq=frame.seq,
            event_time=frame.event_time,
            frames=np.stack([image for _, image, _ in camera.frames]),
            oldest_ref=min(refs) if refs else None,
        )

    def oldest_ref(self, camera: str) -> int | None:
        """Smallest ref a restart must re-read to rebuild this camera's context (the frames after the oldest)."""
        state = self._cameras.get(camera)
        if state is None or not state.frames:
            return None
        # The next stack needs only the newest K frames; the oldest of a full buffer is about to fall out.
        refs = [ref for _, _, ref in list(state.frames)[-self.context :] if ref is not None]
        return min(refs) if refs else None

    def forget(self, camera: str) -> None:
        self._cameras.pop(camera, None)
