"""Anomaly scores from the conditional denoiser, by imputation and by reconstruction.

Both modes return the squared error per entry [batch, length, channels] of normalised windows; the detector turns
it into window, per-step and per-channel scores. Every random draw comes from a fixed noise bank generated once
from the model seed: each window gets the same noise whatever batch it arrives in, so Triton's dynamic batching
gives the scores an in-process call gives (common random numbers also make scores of different windows comparable).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import torch

from triton_models.diffusion import NoiseSchedule, ddim_sample
from triton_models.names import IMPUTATION, TS_MODES
from triton_models.timeseries.networks import ConvDenoiser


@dataclass
class ScoringConfig:
    mask_kind: str = "time"  # "time" | "channel" | "both": which complementary mask families impute
    time_groups: int = 4  # contiguous time blocks per window for "time" masks
    channel_groups: int = 0  # 0 = one mask per channel
    imputation_steps: int = 5  # DDIM steps from pure noise
    reconstruction_start: float = 0.4  # t0 as a fraction of the schedule length
    reconstruction_steps: int = 4  # DDIM steps from t0 down to 0
    # Noise draws whose reconstructions are averaged: the error of one draw carries that draw's own sampling noise,
    # the averaged reconstruction approaches the model's expected normal window given the noised one.
    reconstruction_samples: int = 4
    chunk: int = 64  # windows per forward pass (x masks): small batches run fastest on CPU; scores do not depend on it
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def complementary_masks(kind: str, length: int, channels: int, time_groups: int, channel_groups: int) -> torch.Tensor:
    """Observation masks [masks, length, channels] (1 = observed). Within each family the hidden entries of the
    masks partition the window, so every entry is imputed exactly once per family without ever being seen."""
    families = []
    if kind in ("time", "both"):
        bounds = torch.linspace(0, length, time_groups + 1).round().long().tolist()
        for start, stop in itertools.pairwise(bounds):
            mask = torch.ones(length, channels)
            mask[start:stop] = 0
            families.append(mask)
    if kind in ("channel", "both"):
        groups = channels if channel_groups <= 0 else min(channel_groups, channels)
        for group in range(groups):
            mask = torch.ones(length, channels)
            mask[:, group::groups] = 0
            families.append(mask)
    if not families:
        raise ValueError(f"unknown mask kind {kind!r} (channel | time | both)")
    return torch.stack(families)


class DiffusionScorer:
    """Runs the denoiser in either mode with the fixed noise bank; inputs are normalised windows."""

    def __init__(self, network: ConvDenoiser, schedule: NoiseSchedule, config: ScoringConfig, length: int, seed: int):
        self.network = network.eval()
        self.schedule = schedule
        self.config = config
        self.length = length
        channels = network.channels
        self.masks = complementary_masks(config.mask_kind, length, channels, config.time_groups, config.channel_groups)
        self.families = (config.mask_kind == "both") + 1
        generator = torch.Generator().manual_seed(seed)
        self.imputation_noise = torch.randn((self.masks.shape[0], length, channels), generator=generator)
        self.reconstruction_noise = torch.randn((config.reconstruction_samples, length, channels), generator=generator)
        start = round(config.reconstruction_start * (schedule.num_steps - 1))
        self.reconstruction_start = start
        self.imputation_timesteps = schedule.ddim_timesteps(config.imputation_steps)
        self.reconstruction_timesteps = schedule.ddim_timesteps(config.reconstruction_steps, start)

    def to(self, device: torch.device | str) -> DiffusionScorer:
        self.network.to(device)
        for name in ("masks", "imputation_noise", "reconstruction_noise"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @torch.no_grad()
    def squared_errors(self, windows: torch.Tensor, mode: str) -> torch.Tensor:
        if mode not in TS_MODES:
            raise ValueError(f"unknown mode {mode!r} ({' | '.join(TS_MODES)})")
        parts = [
            self._imputation(chunk) if mode == IMPUTATION else self._reconstruction(chunk)
            for chunk in windows.split(self.config.chunk)
        ]
        return torch.cat(parts) if parts else windows.new_zeros(windows.shape)

    def _run(self, x0: torch.Tensor, mask: torch.Tensor, x_start: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.network(x_t, t, x0, mask)

        return ddim_sample(denoise, self.schedule, x_start, timesteps)

    def _imputation(self, windows: torch.Tensor) -> torch.Tensor:
        batch, masks = windows.shape[0], self.masks.shape[0]
        x0 = windows.repeat_interleave(masks, dim=0)
        mask = self.masks.repeat(batch, 1, 1)
        noise = self.imputation_noise.repeat(batch, 1, 1)
        imputed = self._run(x0, mask, noise, self.imputation_timesteps)
        hidden = 1 - mask
        errors = ((imputed - x0) ** 2 * hidden).reshape(batch, masks, *windows.shape[1:]).sum(dim=1)
        return errors / self.families

    def _reconstruction(self, windows: torch.Tensor) -> torch.Tensor:
        batch, samples = windows.shape[0], self.reconstruction_noise.shape[0]
        x0 = windows.repeat_interleave(samples, dim=0)
        t = torch.full((len(x0),), self.reconstruction_start, dtype=torch.long, device=windows.device)
        x_start = self.schedule.q_sample(x0, t, self.reconstruction_noise.repeat(batch, 1, 1))
        empty = torch.zeros_like(x0)
        reconstructed = self._run(empty, empty, x_start, self.reconstruction_timesteps)
        mean = reconstructed.reshape(batch, samples, *windows.shape[1:]).mean(dim=1)
        return (mean - windows) ** 2
