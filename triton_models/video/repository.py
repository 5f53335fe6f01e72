"""The Triton model directory of the video model: config.pbtxt, the adapter, weights, card and loss plot.

Layout written by :func:`export_model`::

    <repo>/video_diffusion/config.pbtxt       python backend, dynamic batching, KIND_CPU
    <repo>/video_diffusion/1/model.py         thin adapter (triton_models/video/triton_model.py)
    <repo>/video_diffusion/1/weights.pt       network weights
    <repo>/video_diffusion/1/config.json      VideoModelConfig
    <repo>/video_diffusion/model_card.json    triton_models.model_card.VideoCard: size, context, threshold, ...
    <repo>/video_diffusion/loss.png           training loss
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

from triton_models.model_card import CARD_FILE, ServedThreshold, TensorSpec, Training, TritonIo, VideoCard
from triton_models.names import FRAMES, MAP, SCORE
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion

matplotlib.use("Agg")
from matplotlib import pyplot as plt

MODEL_NAME = "video_diffusion"
ADAPTER_SOURCE = Path(__file__).with_name("triton_model.py")
DESCRIPTION = (
    "Conditional frame diffusion: the current frame predicted from the K past ones by few-step DDIM; anomaly score = "
    "the largest patch error of that prediction. Identity-shortcut guard: forecast scoring never shows the network "
    "the current frame (DDIM from seeded noise); reconstruct scoring shows it only noised to noise_level x T. With "
    "motion_weight > 0 the patch error is blended geometrically with a motion map (frame difference or optical flow "
    "magnitude): high only where the model is surprised and something moves"
)
SCORE_SEMANTICS = (
    "the largest patch value of MAP (the prediction's mean squared error per patch, blended with the motion when "
    "motion_weight > 0) of the scored (last) frame; alarm when SCORE > threshold"
)


def config_pbtxt(config: VideoModelConfig, max_batch_size: int = 64, instances: int = 1) -> str:
    """Batched I/O: FRAMES uint8 [-1, K+1, H, W]; SCORE fp32, produced as [-1] (reshape) but, since Triton needs
    non-empty dims for batched tensors, delivered to clients as [-1, 1]; MAP fp32 [-1, h, w].

    ``instances`` CPU instances (``triton.instance_count``) of one torch thread each: on a small shared machine,
    parallel instances keep the cores busy without the spin-waiting of oversubscribed intra-op threads (2 threads
    under contention trained 5x slower than 1 here)."""
    map_h, map_w = config.map_shape
    return f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {max_batch_size}
input [
  {{ name: "{FRAMES}" data_type: TYPE_UINT8 dims: [ {config.context + 1}, {config.height}, {config.width} ] }}
]
output [
  {{ name: "{SCORE}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }} }},
  {{ name: "{MAP}" data_type: TYPE_FP32 dims: [ {map_h}, {map_w} ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: 2000 }}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
parameters {{ key: "TORCH_THREADS" value {{ string_value: "1" }} }}
"""


def save_loss_plot(losses: list[float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="batch loss")
    window = max(1, len(losses) // 50)
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"mean of {window}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("MSE (x0, pixels in [-1, 1])")
    ax.set_title("video_diffusion training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def export_model(
    model: FrameDiffusion,
    repository: Path,
    threshold: ServedThreshold,
    training: Training,
    scoring_selection: dict[str, Any],
    losses: list[float],
    instances: int = 1,
) -> Path:
    """Write the model directory into ``repository``; returns it."""
    config = model.config
    model_dir = repository / MODEL_NAME
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(config, instances=instances))
    shutil.copyfile(ADAPTER_SOURCE, version_dir / "model.py")
    torch.save(model.net.state_dict(), version_dir / "weights.pt")
    (version_dir / "config.json").write_text(config.to_json())
    io = TritonIo(
        inputs={FRAMES: TensorSpec(dtype="UINT8", dims=[-1, config.context + 1, config.height, config.width])},
        outputs={
            SCORE: TensorSpec(dtype="FP32", dims=[-1, 1]),
            MAP: TensorSpec(dtype="FP32", dims=[-1, *config.map_shape]),
        },
        score_semantics=SCORE_SEMANTICS,
    )
    VideoCard(
        model=MODEL_NAME,
        description=DESCRIPTION,
        io=io,
        training=training,
        config=asdict(config),
        context=config.context,
        height=config.height,
        width=config.width,
        map_shape=config.map_shape,
        threshold=threshold,
        parameters=sum(p.numel() for p in model.net.parameters()),
        weights_bytes=(version_dir / "weights.pt").stat().st_size,
        scoring_selection=scoring_selection,
    ).write(model_dir)
    save_loss_plot(losses, model_dir / "loss.png")
    return model_dir


def load_model(version_dir: Path) -> FrameDiffusion:
    """The model saved in ``<repo>/video_diffusion/1`` in eval mode."""
    model = FrameDiffusion(VideoModelConfig.from_file(version_dir / "config.json"))
    model.net.load_state_dict(torch.load(version_dir / "weights.pt", map_location="cpu", weights_only=True))
    model.eval()
    return model


def load_card(model_dir: Path) -> VideoCard:
    """The card of ``<repo>/video_diffusion``."""
    return VideoCard.from_json((model_dir / CARD_FILE).read_text())
