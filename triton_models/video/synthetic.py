"""Synthetic anomalies for label-free model selection: normal clips with an injected abnormal event.

Choosing a scoring setting on the test labels would overfit the benchmark; instead the settings are compared on
held-out NORMAL clips of the training camera, into which events that normal footage of that camera never shows
are injected (the survey's use of generated anomalies for calibration and testing):

- ``moving_object``: a patch cut from another normal clip (where it moved, i.e. a walker) crosses the scene
  along a straight line as a rigid object, as a bike, skater or cart would: faster than walkers, or dimmer,
  smaller, slower, across the walkway, or already in view at the first frame;
- ``speed_up``: a stretch of the clip plays at ``stride`` x speed (frames skipped), everything moves too fast;
- ``reverse_play``: a stretch plays backwards, every normal object moves the wrong way.

Each generator returns the modified clip and 0/1 frame labels; frames outside the event stay untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SyntheticEvent:
    kind: str
    start: int
    length: int


def moving_patch_location(donor: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int]:
    """(frame, top, left) of the patch of ``donor`` [T, H, W] that changes most between consecutive frames:
    a moving object of the normal scene rather than static background."""
    height, width = size
    motion = np.abs(np.diff(donor.astype(np.float32), axis=0))  # [T-1, H, W]
    cumulative = motion.cumsum(1).cumsum(2)
    padded = np.pad(cumulative, ((0, 0), (1, 0), (1, 0)))
    sums = (
        padded[:, height:, width:]
        - padded[:, :-height, width:]
        - padded[:, height:, :-width]
        + padded[:, :-height, :-width]
    )
    frame, top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(frame) + 1, int(top), int(left)


def moving_object(
    clip: np.ndarray,
    donor: np.ndarray,
    rng: np.random.Generator,
    speed: float = 3.0,
    size: tuple[int, int] = (12, 8),
    start: int | None = None,
    contrast: float = 0.5,
    vertical: bool = False,
    entered: float = 0.0,
    kind: str = "fast_object",
) -> tuple[np.ndarray, np.ndarray, SyntheticEvent]:
    """Add the most moving ``size`` patch of ``donor`` to ``clip`` [T, H, W] uint8, crossing it in a straight line at
    ``speed`` pixels per frame from a random row (column if ``vertical``: across the walkway rather than along it),
    its contrast scaled by ``contrast`` (a dim object is harder to find). ``entered`` > 0 starts it that fraction of
    the way across (already in view at its first frame, as an object present from a clip's first frame is).
    Labels mark the frames where it is visible."""
    frames, height, width = clip.shape
    patch_h, patch_w = size
    donor_frame, top, left = moving_patch_location(donor, size)
    # The object as its deviation from its own patch mean, added to the background it crosses: its texture
    # without a brightness step at the patch border that no real object would have.
    patch = donor[donor_frame, top : top + patch_h, left : left + patch_w].astype(np.float32)
    patch = (patch - patch.mean()) * contrast
    travel = (height - patch_h) if vertical else (width - patch_w)
    first_offset = entered * travel
    crossing = int(np.ceil((travel - first_offset) / speed)) + 1
    length = min(crossing, frames)
    begin = int(rng.integers(0, frames - length + 1)) if start is None else start
    lane = int(rng.integers(0, (width - patch_w if vertical else height - patch_h) + 1))
    direction = 1 if rng.random() < 0.5 else -1
    out = clip.copy()
    labels = np.zeros(frames, dtype=np.int64)
    for step in range(length):
        offset = round(first_offset + step * speed)
        position = min(max(offset if direction == 1 else travel - offset, 0), travel)
        row, column = (position, lane) if vertical else (lane, position)
        region = out[begin + step, row : row + patch_h, column : column + patch_w]
        region[...] = np.clip(region + patch, 0, 255).astype(np.uint8)
        labels[begin + step] = 1
    return out, labels, SyntheticEvent(kind, begin, length)


def speed_up(
    clip: np.ndarray, rng: np.random.Generator, stride: int = 4, length: int = 20, start: int | None = None
) -> tuple[np.ndarray, np.ndarray, SyntheticEvent]:
    """Play ``length`` frames from ``start`` at ``stride`` x speed (every ``stride``-th frame): a local
    fast-forward; the clip gets shorter by ``length * (stride - 1)`` frames. Labelled: the frames reached by a
    ``stride``-frame jump (the fast ones and the first one after)."""
    frames = len(clip)
    needed = length * stride
    if frames <= needed:
        raise ValueError(f"clip of {frames} frames is too short for {length} frames at stride {stride}")
    begin = int(rng.integers(1, frames - needed + 1)) if start is None else start
    fast = clip[begin : begin + needed : stride]
    out = np.concatenate([clip[:begin], fast, clip[begin + needed :]])
    labels = np.zeros(len(out), dtype=np.int64)
    labels[begin + 1 : begin + length + 1] = 1
    return out, labels, SyntheticEvent("speed_up", begin, length)


def reverse_play(
    clip: np.ndarray, rng: np.random.Generator, length: int = 30, start: int | None = None
) -> tuple[np.ndarray, np.ndarray, SyntheticEvent]:
    """Play ``length`` frames from ``start`` backwards: every normal object moves the wrong way (walkers walk
    backwards, with a jump where the reversed stretch begins and ends). Same length; the reversed frames are
    labelled."""
    frames = len(clip)
    if frames <= length + 1:
        raise ValueError(f"clip of {frames} frames is too short to reverse {length} frames")
    begin = int(rng.integers(1, frames - length + 1)) if start is None else start
    out = clip.copy()
    out[begin : begin + length] = clip[begin : begin + length][::-1]
    labels = np.zeros(frames, dtype=np.int64)
    labels[begin : begin + length] = 1
    return out, labels, SyntheticEvent("reverse_play", begin, length)
