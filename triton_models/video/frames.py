"""Frames at model resolution: one conversion for training, evaluation and ingestion, and causal windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from triton_models.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def to_model_frame(image: Image.Image, width: int, height: int) -> np.ndarray:
    """Grayscale, resized with Pillow's antialiasing bilinear filter; uint8 [height, width]."""
    return np.asarray(image.convert("L").resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def clip_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` that hold image files, sorted by name."""
    clips = [p for p in sorted(root.iterdir()) if p.is_dir() and frame_files(p)]
    if not clips:
        raise FileNotFoundError(f"no clip folders with image files under {root}")
    return clips


def load_clip(folder: Path, width: int, height: int) -> np.ndarray:
    """All frames of one clip folder, [T, height, width] uint8."""
    frames = []
    for path in frame_files(folder):
        with Image.open(path) as image:
            frames.append(to_model_frame(image, width, height))
    return np.stack(frames)


def load_clips(root: Path, width: int, height: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Every clip folder under ``root`` (:func:`clip_folders`) by name."""
    folders = clip_folders(root)
    return {
        f.name: load_clip(f, width, height)
        for f in progress_bar(folders, desc=f"load {root.name}", disable=not progress)
    }


def causal_windows(clip: np.ndarray, context: int) -> np.ndarray:
    """[T, H, W] -> [T, K+1, H, W]: each frame with its K predecessors.

    The first K frames lack predecessors; the clip's first frame is repeated in their place (as a stream that
    just started would do), so every frame gets a score and none uses a later frame.
    """
    padded = np.concatenate([np.repeat(clip[:1], context, axis=0), clip])
    index = np.arange(len(clip))[:, None] + np.arange(context + 1)[None]
    return padded[index]
