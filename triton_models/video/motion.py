"""Dense optical flow at model resolution: the motion that the video score can weigh the model's error by.

Farneback's flow (OpenCV) from the last past frame to the current one, as a magnitude in pixels per frame at model
resolution, averaged over the same patches as the error map. It is computed from the frames alone, one window at a
time, so in-process and Triton scores agree and a frame's value does not depend on its batch.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from triton_models.video.config import VideoModelConfig

# Parameters for small frames (96 x 144 by default): a 9-pixel window and three pyramid levels follow a walker's
# one-pixel steps and a cyclist's several-pixel ones.
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 9, "iterations": 3, "poly_n": 5, "poly_sigma": 1.1, "flags": 0}


def flow_magnitude(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Two uint8 frames [H, W] -> the flow's length per pixel [H, W] float32, pixels per frame."""
    flow = cv2.calcOpticalFlowFarneback(previous, current, None, **FARNEBACK)
    return np.hypot(flow[..., 0], flow[..., 1]).astype(np.float32)


def flow_map(frames_uint8: torch.Tensor, config: VideoModelConfig) -> torch.Tensor:
    """frames [B, K+1, H, W] uint8 -> mean flow magnitude per patch [B, h, w] (last past frame to current)."""
    windows = np.ascontiguousarray(frames_uint8.numpy())
    magnitudes = np.stack([flow_magnitude(window[-2], window[-1]) for window in windows])
    return F.avg_pool2d(torch.from_numpy(magnitudes)[:, None], config.patch, stride=config.patch_stride)[:, 0]


def flow_scores(frames_uint8: torch.Tensor, config: VideoModelConfig) -> torch.Tensor:
    """Baseline: the largest patch of :func:`flow_map` [B] (how fast the fastest thing in view moves), no model."""
    return flow_map(frames_uint8, config).flatten(1).amax(dim=1)
