"""Training of the frame diffusion model and its label-free threshold."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from triton_models.progress import progress_bar
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, score_batches, to_unit


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    threads: int = 1


@dataclass
class TrainResult:
    model: FrameDiffusion
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_model(
    windows: np.ndarray, config: VideoModelConfig, settings: TrainSettings, progress: bool = True
) -> TrainResult:
    """windows [N, K+1, H, W] uint8 of normal clips. Horizontal flips double the data (walkers go both ways)."""
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    model = FrameDiffusion(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.learning_rate, total_steps=settings.steps, pct_start=0.05
    )
    data = torch.from_numpy(windows)
    losses: list[float] = []
    started = time.perf_counter()
    bar = progress_bar(range(settings.steps), desc="train video", disable=not progress, mininterval=2.0)
    for _ in bar:
        index = torch.randint(0, len(data), (settings.batch_size,), generator=generator)
        clips = to_unit(data[index])
        flip = torch.rand(settings.batch_size, generator=generator) < 0.5
        clips = torch.where(flip[:, None, None, None], clips.flip(-1), clips)
        loss = model.loss(clips, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if len(losses) % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.5f}")
    model.eval()
    return TrainResult(model=model, losses=losses, seconds=time.perf_counter() - started)


def calibrate_threshold(model: FrameDiffusion, held_out_windows: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of scores on held-out normal clips: a label-free threshold (no anomalies needed)."""
    scores, _ = score_batches(model, held_out_windows)
    return float(np.quantile(scores, quantile))
