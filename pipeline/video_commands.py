"""``diffsentry train video`` and ``diffsentry evaluate video``: thin CLI over ``triton_models.video`` (training,
selection and export in ``train``, test-clip scoring and metrics in ``evaluation``).

Data layout: a folder of clip folders, each holding the frames of one clip as sorted image files. Test folders add
``labels.csv`` with ``video,frame,anomalous`` (frame = 0-based index into the clip's sorted files).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from core.settings import get_settings
from infra.services import triton_only
from pipeline.video_triton import score_through_triton
from triton_models.video.config import VideoModelConfig
from triton_models.video.evaluation import evaluation_results, score_test_clips, write_plots
from triton_models.video.repository import MODEL_NAME, load_card, load_model
from triton_models.video.train import FitResult, TooFewClipsError, TrainSettings, fit


def _config_options(context: int, ddim_steps: int, base_channels: int) -> VideoModelConfig:
    video = get_settings().video
    return VideoModelConfig(
        height=video.height, width=video.width, context=context, ddim_steps=ddim_steps, base_channels=base_channels
    )


def _fit(
    frames: Path, repository: Path, config: VideoModelConfig, settings: TrainSettings, holdout: int, quantile: float
) -> FitResult:
    try:
        return fit(frames, repository, config, settings, holdout, quantile, get_settings().triton.instance_count)
    except TooFewClipsError as error:
        raise typer.BadParameter(str(error)) from error


def train(
    frames: Annotated[Path, typer.Option("--frames", help="Folder of clip folders of normal frames.")],
    out: Annotated[Path, typer.Option("--out", help="Model repository; writes <out>/video_diffusion/.")],
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 3000,
    batch_size: Annotated[int, typer.Option()] = 16,
    context: Annotated[int, typer.Option(help="K past frames that condition the prediction.")] = 4,
    ddim_steps: Annotated[int, typer.Option()] = 4,
    base_channels: Annotated[int, typer.Option()] = 32,
    holdout: Annotated[int, typer.Option(help="Last clips held out to set the threshold.")] = 2,
    quantile: Annotated[float, typer.Option(help="Threshold = this quantile of held-out normal scores.")] = 0.99,
    threads: Annotated[int, typer.Option(help="Torch threads for training (1: see config_pbtxt).")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train the frame diffusion model and write it into a Triton model repository."""
    config = _config_options(context, ddim_steps, base_channels)
    settings = TrainSettings(steps=steps, batch_size=batch_size, seed=seed, threads=threads)
    fitted = _fit(frames, out, config, settings, holdout, quantile)
    chosen = next(row["name"] for row in fitted.selection if row["chosen"])
    typer.echo(f"wrote {fitted.model_dir} (scoring {chosen}, threshold {fitted.threshold:.5f})")


def evaluate(
    train_root: Annotated[Path, typer.Option("--train", help="Folder of normal clip folders.")],
    test_root: Annotated[Path, typer.Option("--test", help="Folder of clip folders with labels.csv.")],
    out: Annotated[Path, typer.Option("--out", help="results JSON.")],
    plots: Annotated[Path | None, typer.Option("--plots", help="Folder for the PNGs.")] = None,
    model_path: Annotated[Path | None, typer.Option("--model", help="Model repository to load, not train.")] = None,
    save_model: Annotated[Path | None, typer.Option("--save-model", help="Keep the trained repository here.")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 3000,
    context: Annotated[int, typer.Option()] = 4,
    ddim_steps: Annotated[int, typer.Option()] = 4,
    base_channels: Annotated[int, typer.Option()] = 32,
    holdout: Annotated[int, typer.Option()] = 2,
    quantile: Annotated[float, typer.Option()] = 0.99,
    threads: Annotated[int, typer.Option(help="Torch threads for training and in-process scoring.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    triton: Annotated[bool, typer.Option(help="Also score through a tritonserver started for this run.")] = True,
) -> None:
    """Train (or load) the video model, score the labelled test clips causally, compare with frame differencing."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="diffsentry-video-") as tmp:
        if model_path is not None:
            repository = model_path.parent if model_path.name == MODEL_NAME else model_path
            card = load_card(repository / MODEL_NAME)
            model, threshold = load_model(repository / MODEL_NAME / "1"), card.threshold.value
            selection = card.scoring_selection.get("candidates", [])
            train_seconds = selection_seconds = None
        else:
            repository = save_model or Path(tmp) / "model_repository"
            config = _config_options(context, ddim_steps, base_channels)
            settings = TrainSettings(steps=steps, seed=seed, threads=threads)
            fitted = _fit(train_root, repository, config, settings, holdout, quantile)
            model, threshold, selection = fitted.model, fitted.threshold, fitted.selection
            train_seconds, selection_seconds = fitted.train_seconds, fitted.selection_seconds
        test = score_test_clips(model, test_root)
        metrics = evaluation_results(model, test, threshold, selection)

        triton_result: dict[str, object] = {}
        if triton:
            all_windows = np.concatenate(list(test.windows.values()))
            in_process = np.concatenate(list(test.model_scores.values()))
            with triton_only(repository) as grpc_url:
                asyncio.run(score_through_triton(grpc_url, MODEL_NAME, all_windows[:64]))  # warm-up
                triton_scores, _, seconds = asyncio.run(score_through_triton(grpc_url, MODEL_NAME, all_windows))
            triton_result = {
                "triton_fps": test.frames / seconds,
                "triton_max_abs_score_difference": float(np.max(np.abs(triton_scores - in_process))),
                "triton_client": "gRPC aio, 16 concurrent streams of 1-frame requests, dynamic batching",
            }

    results = {
        **metrics,
        **triton_result,
        "settings": {
            "model": json.loads(model.config.to_json()),
            "threshold": threshold,
            "threshold_quantile": quantile,
            "holdout_clips": holdout,
            "steps": steps if model_path is None else None,
            "threads": threads,
            "train_seconds": train_seconds,
            "selection_seconds": selection_seconds,
            "loaded_model": str(model_path) if model_path else None,
            "test_frames": test.frames,
            "first_frames": "the first K frames repeat the clip's first frame as missing context (causal)",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores",
            "wall_seconds": time.perf_counter() - started,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if plots is not None:
        write_plots(model, test, threshold, plots)
    summary = {k: results[k] for k in ("inprocess_fps", "triton_fps") if k in results}
    typer.echo(
        f"model AUROC micro {results['model']['auroc_micro']:.4f} macro {results['model']['auroc_macro']:.4f}; "
        f"baseline micro {results['baseline']['auroc_micro']:.4f}; {summary}; wrote {out}"
    )
