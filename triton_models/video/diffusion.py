"""Conditional frame diffusion: training loss, few-step DDIM prediction and patch scoring.

The model generates the current frame from the K past frames only. Guard against the identity shortcut (the
model reconstructing the anomaly it is shown): at scoring time the observed current frame never enters the
network; DDIM starts from seeded Gaussian noise and denoises conditioned on the past frames, so the prediction
is a forecast and an unexpected object or motion in the current frame shows up as error. The noise is drawn from
one fixed seed per model, identical for every frame, so a frame's score does not depend on which other frames
share its batch: Triton's dynamic batching gives the same scores as in-process scoring.

Parameterisation: the network predicts the clean frame x0 (as a residual on the last past frame); DDIM (eta=0)
derives the noise estimate from it. x0-prediction suits few steps and a nearly deterministic target.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from triton_models.video.config import VideoModelConfig
from triton_models.video.network import ConditionalUNet


def cosine_alpha_bar(timesteps: int) -> torch.Tensor:
    """Cumulative signal fraction of the cosine schedule (Nichol & Dhariwal 2021), clipped away from 0."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    alpha_bar = (f / f[0])[1:]
    return alpha_bar.clamp(min=1e-5, max=0.9999).float()


def to_unit(frames_uint8: torch.Tensor) -> torch.Tensor:
    return frames_uint8.float() / 127.5 - 1.0


class FrameDiffusion(torch.nn.Module):
    def __init__(self, config: VideoModelConfig) -> None:
        super().__init__()
        self.config = config
        self.net = ConditionalUNet(config.context, config.base_channels)
        self.register_buffer("alpha_bar", cosine_alpha_bar(config.timesteps), persistent=False)
        generator = torch.Generator().manual_seed(config.noise_seed)
        self.register_buffer(
            "start_noise", torch.randn(1, 1, config.height, config.width, generator=generator), persistent=False
        )

    def loss(self, clips: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """clips [B, K+1, H, W] in [-1, 1]; MSE between the predicted and the true current frame."""
        past, current = clips[:, :-1], clips[:, -1:]
        t = torch.randint(0, self.config.timesteps, (clips.shape[0],), generator=generator)
        noise = torch.randn(current.shape, generator=generator)
        a = self.alpha_bar[t][:, None, None, None]
        noisy = a.sqrt() * current + (1 - a).sqrt() * noise
        return F.mse_loss(self.net(past, noisy, t), current)

    def ddim_timesteps(self) -> list[int]:
        steps = self.config.ddim_steps
        return [round(self.config.timesteps * (steps - i) / steps) - 1 for i in range(steps)]

    @torch.no_grad()
    def predict(self, past: torch.Tensor) -> torch.Tensor:
        """past [B, K, H, W] in [-1, 1] -> the predicted current frame [B, 1, H, W] by DDIM (eta=0)."""
        x = self.start_noise.expand(past.shape[0], -1, -1, -1)
        timesteps = self.ddim_timesteps()
        x0 = x
        for index, t in enumerate(timesteps):
            a = self.alpha_bar[t]
            x0 = self.net(past, x, torch.full((past.shape[0],), t, dtype=torch.long)).clamp(-1, 1)
            if index + 1 == len(timesteps):
                break
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
            a_next = self.alpha_bar[timesteps[index + 1]]
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
        return x0

    @torch.no_grad()
    def score(self, frames_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """frames [B, K+1, H, W] uint8 (K past, then current) -> (score [B], anomaly map [B, h, w])."""
        clips = to_unit(frames_uint8)
        predicted = self.predict(clips[:, :-1])
        return patch_scores(clips[:, -1:], predicted, self.config)


def patch_scores(
    observed: torch.Tensor, predicted: torch.Tensor, config: VideoModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared error per patch (the anomaly map) and its maximum (the frame score).

    The maximum over patch means responds to one small fast object (a bike among walkers) that a frame-wide mean
    would dilute, and stays comparable across clips because it does not depend on the clip's other frames.
    """
    error = (observed - predicted).pow(2)
    anomaly_map = F.avg_pool2d(error, config.patch, stride=config.patch_stride)[:, 0]
    return anomaly_map.flatten(1).amax(dim=1), anomaly_map


def frame_difference_scores(frames_uint8: torch.Tensor, config: VideoModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Baseline: the same patch score with the last past frame as the prediction (plain frame differencing)."""
    clips = to_unit(frames_uint8)
    return patch_scores(clips[:, -1:], clips[:, -2:-1], config)


def score_batches(model: FrameDiffusion, windows: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Score [N, K+1, H, W] uint8 windows in batches; returns scores [N] and maps [N, h, w] as float32."""
    scores, maps = [], []
    model.eval()
    for start in range(0, len(windows), batch_size):
        score, anomaly_map = model.score(torch.from_numpy(windows[start : start + batch_size]))
        scores.append(score.numpy())
        maps.append(anomaly_map.numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)
