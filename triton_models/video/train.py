"""Training of the frame diffusion model, its label-free scoring choice and threshold, and the export (``fit``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from triton_models.model_card import ServedThreshold, Training
from triton_models.progress import progress_bar
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, score_batches, to_unit
from triton_models.video.frames import causal_windows, load_clips
from triton_models.video.repository import export_model
from triton_models.video.selection import select_scoring, selection_spread, synthetic_set


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


class TooFewClipsError(ValueError):
    """Not enough clips to train on some and hold the others out."""


@dataclass
class FitResult:
    model: FrameDiffusion
    threshold: float
    model_dir: Path
    selection: list[dict[str, object]]
    train_seconds: float
    selection_seconds: float


def fit(
    frames: Path,
    repository: Path,
    config: VideoModelConfig,
    settings: TrainSettings,
    holdout: int,
    quantile: float,
    instances: int = 1,
) -> FitResult:
    """Train on all clips but the last ``holdout`` ones; on those, choose the scoring setting by synthetic
    anomalies and set the threshold (both label-free); export to ``repository`` (``instances`` per server)."""
    clips = load_clips(frames, config.width, config.height)
    names = sorted(clips)
    if len(names) <= holdout:
        raise TooFewClipsError(f"need more than {holdout} clips under {frames} to hold {holdout} out")
    train_names, held_names = names[: len(names) - holdout], names[len(names) - holdout :]
    train_windows = np.concatenate([causal_windows(clips[n], config.context) for n in train_names])
    held_windows = np.concatenate([causal_windows(clips[n], config.context) for n in held_names])
    result = train_model(train_windows, config, settings)
    selection_started = time.perf_counter()
    synthetic = synthetic_set(
        [clips[n] for n in held_names], [clips[n] for n in train_names], config.context, seed=settings.seed
    )
    chosen, chosen_config, table = select_scoring(result.model, synthetic)
    result.model.config = chosen_config
    selection_seconds = time.perf_counter() - selection_started
    threshold = calibrate_threshold(result.model, held_windows, quantile)
    served = ServedThreshold(
        value=threshold,
        method="quantile",
        rule=f"quantile {quantile} of scores on {len(held_names)} held-out normal clips (label-free)",
        details={"quantile": quantile, "clips": held_names},
    )
    training = Training(
        settings=asdict(settings),
        seconds=round(result.seconds, 1),
        final_loss=float(np.mean(result.losses[-100:])),
        data={
            "source": frames.name,
            "train_clips": train_names,
            "calibration_clips": held_names,
            "train_frames": len(train_windows),
            "calibration_frames": len(held_windows),
        },
    )
    selection = {
        "rule": "highest AUROC of synthetic anomalies (pasted rigid objects: fast, dim, small, slow, across the "
        "walkway, in view from the first frame; local fast-forward; reversed playback) injected into the held-out "
        "normal clips vs. their normal frames; ties within 0.001 go to the earlier candidate",
        "chosen": chosen.name,
        "spread": selection_spread(table),
        "synthetic_events": len(synthetic.events),
        "synthetic_frames": {"normal": len(synthetic.normal), "anomalous": len(synthetic.anomalous)},
        "candidates": table,
    }
    model_dir = export_model(result.model, repository, served, training, selection, result.losses, instances)
    return FitResult(result.model, threshold, model_dir, table, result.seconds, selection_seconds)
