"""Gaussian diffusion shared by every model: noise schedule, DDPM loss, DDIM sampler.

Nothing here knows about data shapes beyond "a batch of tensors", nor about the networks: the denoiser is any
callable ``denoiser(x_t, t)`` with ``t`` an integer tensor of diffusion steps, shape [batch], that predicts either the
noise (``prediction="epsilon"``, the time-series model) or the clean sample (``prediction="sample"``, the video
model). Noise is always passed in explicitly (or drawn from an explicit ``torch.Generator``) so that callers can make
sampling deterministic per item, independent of how items are batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch.nn import functional as F

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Prediction = Literal["epsilon", "sample"]
Spacing = Literal["linspace", "trailing"]


class NoiseSchedule:
    """Discrete variance-preserving schedule: ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``, t in [0, T)."""

    def __init__(
        self,
        num_steps: int = 200,
        kind: str = "cosine",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        alpha_bar_bounds: tuple[float, float] | None = None,
    ):
        """``alpha_bar_bounds`` (cosine only): clip alpha_bar into [low, high] instead of lifting the curve to end at
        1e-3. A noise-predicting model divides by sqrt(alpha_bar), which the lift keeps off 0 at T; a model that
        predicts x0 divides by sqrt(1 - alpha_bar), which the upper bound keeps off 0 at t = 0."""
        if num_steps < 2:
            raise ValueError("a schedule needs at least two steps")
        if alpha_bar_bounds is not None and kind != "cosine":
            raise ValueError("alpha_bar_bounds applies to the cosine schedule only")
        self.num_steps = num_steps
        self.kind = kind
        if kind == "linear":
            # Ho et al.'s betas are for T = 1000; scaling by 1000 / T keeps x_T close to pure noise for any T.
            scale = 1000 / num_steps
            betas = torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), num_steps, dtype=torch.float64)
        elif kind == "cosine":
            # Nichol & Dhariwal (2021): abar follows a squared cosine.
            s = 0.008
            steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            if alpha_bar_bounds is None:
                # The terminal alpha_bar is lifted to 1e-3: at ~0 (f(T) = 0) the first DDIM step divides the
                # predicted noise by sqrt(alpha_bar) ~ 1e-3 and blew a learned toy distribution up by 20 sigma.
                alpha_bars = 1e-3 + (1 - 1e-3) * f[1:] / f[0]
            else:
                alpha_bars = (f[1:] / f[0]).clamp(*alpha_bar_bounds)
            betas = 1 - alpha_bars / torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        else:
            raise ValueError(f"unknown schedule kind {kind!r} (linear | cosine)")
        self.betas = betas.float()
        self.alpha_bars = torch.cumprod(1 - betas, dim=0).float()

    def _abar(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return self.alpha_bars.to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noise clean data ``x0`` to step ``t`` (per item) with the given ``noise``."""
        abar = self._abar(t, x0.ndim)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        abar = self._abar(t, x_t.ndim)
        return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        abar = self._abar(t, x_t.ndim)
        return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()

    def ddim_timesteps(
        self, num_sampling_steps: int, start_step: int | None = None, spacing: Spacing = "linspace"
    ) -> list[int]:
        """Evenly spaced, strictly decreasing steps from ``start_step`` (default T-1) down.

        ``linspace`` ends at step 0. ``trailing`` (diffusers' name) divides [0, start + 1) into equal strides and
        takes the last step of each, so it ends one stride above 0: the video model, predicting x0, stops there."""
        start = self.num_steps - 1 if start_step is None else start_step
        if not 0 <= start < self.num_steps:
            raise ValueError(f"start step {start} outside [0, {self.num_steps})")
        count = max(1, min(num_sampling_steps, start + 1))
        if spacing == "linspace":
            steps = torch.linspace(start, 0, count).round().long().tolist()
        elif spacing == "trailing":
            steps = [max(0, round((start + 1) * (count - i) / count) - 1) for i in range(count)]
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r} (linspace | trailing)")
        return sorted(set(steps), reverse=True)


def ddpm_loss(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    weight: torch.Tensor | None = None,
    prediction: Prediction = "epsilon",
) -> torch.Tensor:
    """Mean squared error of the predicted noise (Ho et al., 2020) or clean sample at uniformly drawn steps;
    ``weight`` masks which entries count."""
    t = torch.randint(0, schedule.num_steps, (x0.shape[0],), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    predicted = denoiser(schedule.q_sample(x0, t, noise), t)
    target = noise if prediction == "epsilon" else x0
    if weight is None:
        return F.mse_loss(predicted, target)
    return ((predicted - target) ** 2 * weight).sum() / weight.sum().clamp(min=1.0)


@torch.no_grad()
def ddim_sample(
    denoiser: Denoiser,
    schedule: NoiseSchedule,
    x_start: torch.Tensor,
    timesteps: list[int],
    eta: float = 0.0,
    noises: list[torch.Tensor] | None = None,
    project: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    prediction: Prediction = "epsilon",
    clip_x0: float | None = None,
) -> torch.Tensor:
    """DDIM (Song et al., 2021) from ``x_start`` at ``timesteps[0]`` down through ``timesteps``; returns the x_0
    predicted at the last of them (after ``project``).

    ``eta = 0`` is deterministic given ``x_start``; ``eta > 0`` needs one explicit noise tensor per transition in
    ``noises``. ``project(x, t)`` optionally rewrites the state after each step (e.g. to re-impose observed values).
    ``clip_x0`` clamps the predicted x_0 into [-clip_x0, clip_x0]; the noise estimate is then derived from the
    clamped x_0, so that each step moves towards the x_0 it reports.
    """
    if eta > 0 and (noises is None or len(noises) < len(timesteps)):
        raise ValueError("eta > 0 needs one noise tensor per sampling step")
    x = x_start
    batch = x.shape[0]
    abars = schedule.alpha_bars.to(x.device)
    for index, step in enumerate(timesteps):
        t = torch.full((batch,), step, dtype=torch.long, device=x.device)
        output = denoiser(x, t)
        x0 = output if prediction == "sample" else schedule.predict_x0(x, t, output)
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
        eps = output if prediction == "epsilon" and clip_x0 is None else schedule.predict_eps(x, t, x0)
        previous = timesteps[index + 1] if index + 1 < len(timesteps) else -1
        abar_t = abars[step]
        abar_prev = abars[previous] if previous >= 0 else torch.ones((), device=x.device)
        if previous < 0:
            x = x0
        else:
            sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()
            direction = (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
            x = abar_prev.sqrt() * x0 + direction
            if eta > 0:
                x = x + sigma * noises[index]
        if project is not None:
            x = project(x, previous)
    return x
