"""Conditional frame diffusion: training loss, few-step DDIM prediction and patch scoring.

The model generates the current frame conditioned on the K past frames. Two scoring modes (chosen label-free per
model, see triton_models.video.selection), both guarding against the identity shortcut (the model reconstructing
the anomaly it is shown):

- forecast: the observed current frame never enters the network; DDIM starts from seeded Gaussian noise, so the
  prediction is a forecast and an unexpected object or motion shows up as error;
- reconstruct (the survey's reconstruction-based mode): the current frame is noised to ``noise_level`` x T and
  denoised conditioned on the past; the noise hides its detail, so the model redraws it as normal motion would.

Optionally the error map is divided by the copy-last-frame error (plus a floor): anomalies are where the model
loses its usual advantage over copying; or blended geometrically with a motion map (``motion_weight``): the
copy-last-frame error or the optical flow's magnitude (``motion``, triton_models.video.motion), so the map is high
only where the model is surprised and something moves (and, with the flow, the faster it moves). The noise is
drawn from one fixed seed per model, identical for every frame, so a frame's score does not depend on which other
frames share its batch: Triton's dynamic batching gives the same scores as in-process scoring.

Parameterisation: the network predicts the clean frame x0 (as a residual on the last past frame); DDIM (eta=0)
derives the noise estimate from it. x0-prediction suits few steps and a nearly deterministic target. Schedule,
loss and sampler are the shared ones (triton_models.diffusion); this module only wires the network to them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.nn import functional as F

from triton_models.diffusion import NoiseSchedule, ddim_sample, ddpm_loss
from triton_models.names import RECONSTRUCT
from triton_models.video.config import VideoModelConfig
from triton_models.video.motion import flow_map
from triton_models.video.network import ConditionalUNet

# The cosine schedule clipped (not lifted) at both ends, and x0 clamped to the pixel range: as trained.
ALPHA_BAR_BOUNDS = (1e-5, 0.9999)
PIXEL_RANGE = 1.0


def to_unit(frames_uint8: torch.Tensor) -> torch.Tensor:
    return frames_uint8.float() / 127.5 - 1.0


class FrameDiffusion(torch.nn.Module):
    def __init__(self, config: VideoModelConfig) -> None:
        super().__init__()
        self.config = config
        self.net = ConditionalUNet(config.context, config.base_channels)
        self.schedule = NoiseSchedule(config.timesteps, "cosine", alpha_bar_bounds=ALPHA_BAR_BOUNDS)
        generator = torch.Generator().manual_seed(config.noise_seed)
        self.register_buffer(
            "start_noise", torch.randn(1, 1, config.height, config.width, generator=generator), persistent=False
        )

    def loss(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """clips [B, K+1, H, W] in [-1, 1]; MSE between the predicted and the true current frame."""
        past, current = clips[:, :-1], clips[:, -1:]
        return ddpm_loss(lambda x_t, t: self.net(past, x_t, t), self.schedule, current, generator, prediction="sample")

    @torch.no_grad()
    def predict(self, past: torch.Tensor, current: torch.Tensor | None = None) -> torch.Tensor:
        """past [B, K, H, W] in [-1, 1] -> the current frame [B, 1, H, W] by DDIM (eta=0).

        Without ``current`` (forecast): from pure seeded noise. With ``current`` (reconstruction): from the
        current frame noised to ``noise_level`` x T with the same seeded noise; the noise hides its detail, so the
        model redraws it as normal motion would have it (and cannot copy an anomaly through)."""
        noise = self.start_noise.expand(past.shape[0], -1, -1, -1)
        if current is None:
            x_start, start = noise, None
        else:
            start = max(0, round(self.config.noise_level * self.config.timesteps) - 1)
            x_start = self.schedule.q_sample(current, torch.full((past.shape[0],), start, device=past.device), noise)
        timesteps = self.schedule.ddim_timesteps(self.config.ddim_steps, start, spacing="trailing")
        return ddim_sample(
            lambda x_t, t: self.net(past, x_t, t),
            self.schedule,
            x_start,
            timesteps,
            prediction="sample",
            clip_x0=PIXEL_RANGE,
        )

    @torch.no_grad()
    def prediction(self, clips: torch.Tensor) -> torch.Tensor:
        """clips [B, K+1, H, W] in [-1, 1] -> the model's current frame for the configured scoring mode."""
        past, current = clips[:, :-1], clips[:, -1:]
        return self.predict(past, current if self.config.scoring == RECONSTRUCT else None)

    @torch.no_grad()
    def score(self, frames_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, K+1, H, W] uint8 (K past, then current) -> (score [B], anomaly map [B, h, w])."""
        error, copy_error = self.error_maps(frames_uint8)
        motion = motion_map(frames_uint8, copy_error, self.config)
        anomaly_map = motion_aware_map(error, copy_error, motion, self.config)
        return anomaly_map.flatten(1).amax(dim=1), anomaly_map

    @torch.no_grad()
    def error_maps(self, frames_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, K+1, H, W] uint8 -> (the prediction's patch errors, copy-last-frame patch errors) [B, h, w]."""
        clips = to_unit(frames_uint8)
        current = clips[:, -1:]
        return error_map(current, self.prediction(clips), self.config), error_map(current, clips[:, -2:-1], self.config)


def motion_map(frames_uint8: torch.Tensor, copy_error: torch.Tensor, config: VideoModelConfig) -> torch.Tensor:
    """The motion per patch that ``motion_weight`` blends in: the optical flow's magnitude (computed only when a
    blend uses it), else the copy-last-frame error."""
    if config.blends_flow:
        return flow_map(frames_uint8, config)
    return copy_error


def motion_aware_map(
    error: torch.Tensor, copy_error: torch.Tensor, motion: torch.Tensor, config: VideoModelConfig
) -> torch.Tensor:
    """The anomaly map from the model's patch errors, the copy-last-frame (frame difference) patch errors and the
    motion map (:func:`motion_map`)."""
    if config.copy_ratio_floor > 0:
        # Where the model loses its usual advantage over copying the last frame: motion it cannot explain.
        error = error / (copy_error + config.copy_ratio_floor)
    if config.motion_weight > 0:
        # A geometric blend: high only where the model is surprised AND something moves, so a large but
        # well-predicted motion and a badly predicted still region both stay low.
        error = error.pow(1 - config.motion_weight) * motion.pow(config.motion_weight)
    return error


def error_map(observed: torch.Tensor, predicted: torch.Tensor, config: VideoModelConfig) -> torch.Tensor:
    """Mean squared error per patch [B, h, w]."""
    return F.avg_pool2d((observed - predicted).pow(2), config.patch, stride=config.patch_stride)[:, 0]


def patch_scores(
    observed: torch.Tensor, predicted: torch.Tensor, config: VideoModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error per patch (the anomaly map) and its maximum (the frame score).

    The maximum over patch means responds to one small fast object (a bike among walkers) that a frame-wide mean
    would dilute, and stays comparable across clips because it does not depend on the clip's other frames.
    """
    anomaly_map = error_map(observed, predicted, config)
    return anomaly_map.flatten(1).amax(dim=1), anomaly_map


def frame_difference_scores(frames_uint8: torch.Tensor, config: VideoModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: the same patch score with the last past frame as the prediction (plain frame differencing)."""
    clips = to_unit(frames_uint8)
    return patch_scores(clips[:, -1:], clips[:, -2:-1], config)


def score_configs(
    model: FrameDiffusion, windows: np.ndarray, configs: list[VideoModelConfig], batch_size: int = 64
) -> list[np.ndarray]:
    """Scores [N] of [N, K+1, H, W] uint8 windows under each of ``configs`` (scoring settings of ``model``): the
    network runs once per distinct prediction (mode and noise level); the maps are combined per config exactly as
    :meth:`FrameDiffusion.score` does."""
    base, predictions, flows = model.config, {}, None
    model.eval()
    try:
        scores = []
        for config in configs:
            if flows is None and config.blends_flow:
                flows = torch.cat([flow_map(batch, config) for batch in _batches(windows, batch_size)])
            key = (config.scoring, config.noise_level if config.scoring == RECONSTRUCT else None)
            if key not in predictions:
                model.config = config
                batches = [model.error_maps(batch) for batch in _batches(windows, batch_size)]
                predictions[key] = tuple(torch.cat(maps) for maps in zip(*batches, strict=True))
            error, copy_error = predictions[key]
            motion = flows if config.blends_flow else copy_error
            anomaly_map = motion_aware_map(error, copy_error, motion, config)
            scores.append(anomaly_map.flatten(1).amax(dim=1).numpy().astype(np.float32))
    finally:
        model.config = base
    return scores


def score_batches(model: FrameDiffusion, windows: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Score [N, K+1, H, W] uint8 windows in batches; returns scores [N] and maps [N, h, w] as float32."""
    scores, maps = [], []
    model.eval()
    for batch in _batches(windows, batch_size):
        score, anomaly_map = model.score(batch)
        scores.append(score.numpy())
        maps.append(anomaly_map.numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)


def _batches(windows: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
    """[N, K+1, H, W] uint8 windows as tensors of at most ``batch_size``, in order."""
    for start in range(0, len(windows), batch_size):
        yield torch.from_numpy(windows[start : start + batch_size])
