"""``diffsentry train video`` and ``diffsentry evaluate video``: the frame diffusion model on folders of clips.

Data layout: a folder of clip folders, each holding the frames of one clip as sorted image files. Test folders add
``labels.csv`` with ``video,frame,anomalous`` (frame = 0-based index into the clip's sorted files).

Scoring is causal: a frame is scored from itself and its K predecessors only. The first K frames of a clip use
the clip's first frame in place of the missing predecessors, so every labelled frame has a score.
"""

from __future__ import annotations

import asyncio
import csv
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from core.settings import get_settings
from infra.services import triton_only
from pipeline.video_triton import score_through_triton
from triton_models.progress import progress_bar
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, frame_difference_scores, score_batches, to_unit
from triton_models.video.evaluation import detection_metrics, plot_clip_scores, plot_heatmaps, plot_roc
from triton_models.video.frames import causal_windows, clip_folders, load_clip
from triton_models.video.repository import MODEL_NAME, export_model, load_model, load_threshold
from triton_models.video.selection import select_scoring, synthetic_set
from triton_models.video.train import TrainSettings, calibrate_threshold, train_model


def _load_clips(root: Path, config: VideoModelConfig) -> dict[str, np.ndarray]:
    folders = clip_folders(root)
    return {f.name: load_clip(f, config.width, config.height) for f in progress_bar(folders, desc=f"load {root.name}")}


@dataclass
class FitResult:
    model: FrameDiffusion
    threshold: float
    model_dir: Path
    selection: list[dict[str, object]]
    train_seconds: float
    selection_seconds: float


def fit(
    frames: Path, repository: Path, config: VideoModelConfig, settings: TrainSettings, holdout: int, quantile: float
) -> FitResult:
    """Train on all clips but the last ``holdout`` ones; on those, choose the scoring setting by synthetic
    anomalies and set the threshold (both label-free); export to ``repository``."""
    clips = _load_clips(frames, config)
    names = sorted(clips)
    if len(names) <= holdout:
        raise typer.BadParameter(f"need more than {holdout} clips under {frames} to hold {holdout} out")
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
    card = {
        "training": {
            **asdict(settings),
            "seconds": round(result.seconds, 1),
            "final_loss": float(np.mean(result.losses[-100:])),
        },
        "threshold_rule": f"quantile {quantile} of scores on {len(held_names)} held-out normal clips (label-free)",
        "scoring_selection": {
            "rule": "highest AUROC of synthetic anomalies (fast pasted objects, local fast-forward) injected into "
            "the held-out normal clips vs. their normal frames; ties within 0.001 go to the earlier candidate",
            "chosen": chosen.name,
            "synthetic_events": len(synthetic.events),
            "synthetic_frames": {"normal": len(synthetic.normal), "anomalous": len(synthetic.anomalous)},
            "candidates": table,
        },
        "data": {
            "source": frames.name,
            "train_clips": train_names,
            "calibration_clips": held_names,
            "train_frames": len(train_windows),
            "calibration_frames": len(held_windows),
        },
        "identity_shortcut_guard": "forecast scoring: the current frame never enters the network (DDIM from seeded "
        "noise, conditioned on the K past frames); reconstruct scoring: the current frame enters only noised to "
        "noise_level x T",
    }
    model_dir = export_model(result.model, repository, threshold, card, result.losses)
    return FitResult(result.model, threshold, model_dir, table, result.seconds, selection_seconds)


def _config_options(context: int, ddim_steps: int, base_channels: int) -> VideoModelConfig:
    video = get_settings().video
    return VideoModelConfig(
        height=video.height, width=video.width, context=context, ddim_steps=ddim_steps, base_channels=base_channels
    )


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
    fitted = fit(frames, out, config, settings, holdout, quantile)
    chosen = next(row["name"] for row in fitted.selection if row["chosen"])
    typer.echo(f"wrote {fitted.model_dir} (scoring {chosen}, threshold {fitted.threshold:.5f})")


def _read_labels(test_root: Path) -> dict[str, dict[int, int]]:
    labels: dict[str, dict[int, int]] = {}
    with (test_root / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            labels.setdefault(row["video"], {})[int(row["frame"])] = int(row["anomalous"])
    return labels


def _heatmap_items(
    model: FrameDiffusion,
    windows: dict[str, np.ndarray],
    scores: dict[str, np.ndarray],
    maps: dict[str, np.ndarray],
    count: int = 4,
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """The highest-scoring frame of the first ``count`` clips, with its prediction and map."""
    items = []
    for clip in list(windows)[:count]:
        index = int(np.argmax(scores[clip]))
        window = torch.from_numpy(windows[clip][index : index + 1])
        predicted = model.prediction(to_unit(window))[0, 0]
        predicted_uint8 = ((predicted.numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        items.append(
            (
                f"clip {clip} frame {index}",
                windows[clip][index, -1],
                predicted_uint8,
                maps[clip][index],
                float(scores[clip][index]),
            )
        )
    return items


def _candidates_on_test(
    model: FrameDiffusion,
    windows: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    selection: list[dict[str, object]],
    chosen_scores: dict[str, np.ndarray],
) -> list[dict[str, object]]:
    """The selection table with each candidate's pooled test AUROC added, for the record (after the choice)."""
    chosen_config, rows = model.config, []
    try:
        for row in selection:
            if "scoring" not in row:  # the baseline's row
                rows.append(row)
                continue
            if row["chosen"]:
                rows.append({**row, "test_auroc_micro": detection_metrics(labels, chosen_scores)["auroc_micro"]})
                continue
            model.config = replace(
                chosen_config,
                scoring=str(row["scoring"]),
                noise_level=float(row["noise_level"] or chosen_config.noise_level),
                copy_ratio_floor=float(row["copy_ratio_floor"]),
            )
            scores = {
                clip: score_batches(model, windows[clip])[0] for clip in progress_bar(labels, desc=str(row["name"]))
            }
            rows.append({**row, "test_auroc_micro": detection_metrics(labels, scores)["auroc_micro"]})
    finally:
        model.config = chosen_config
    return rows


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
            version_dir = repository / MODEL_NAME / "1"
            model, threshold = load_model(version_dir), load_threshold(version_dir)
            card = json.loads((repository / MODEL_NAME / "model_card.json").read_text())
            selection = card.get("scoring_selection", {}).get("candidates", [])
            train_seconds = selection_seconds = None
        else:
            repository = save_model or Path(tmp) / "model_repository"
            config = _config_options(context, ddim_steps, base_channels)
            settings = TrainSettings(steps=steps, seed=seed, threads=threads)
            fitted = fit(train_root, repository, config, settings, holdout, quantile)
            model, threshold, selection = fitted.model, fitted.threshold, fitted.selection
            train_seconds, selection_seconds = fitted.train_seconds, fitted.selection_seconds
        config = model.config

        clips = _load_clips(test_root, config)
        labels_table = _read_labels(test_root)
        labels = {c: np.array([labels_table[c][i] for i in range(len(clips[c]))]) for c in clips if c in labels_table}
        windows = {c: causal_windows(clips[c], config.context) for c in labels}

        model_scores, model_maps, baseline_scores = {}, {}, {}
        scoring_seconds = 0.0
        for clip in progress_bar(labels, desc="score test clips"):
            clip_started = time.perf_counter()
            model_scores[clip], model_maps[clip] = score_batches(model, windows[clip])
            scoring_seconds += time.perf_counter() - clip_started
            baseline_scores[clip] = frame_difference_scores(torch.from_numpy(windows[clip]), config)[0].numpy()
        total_frames = sum(len(w) for w in windows.values())
        candidates = _candidates_on_test(model, windows, labels, selection, model_scores)

        triton_result: dict[str, object] = {}
        if triton:
            all_windows = np.concatenate(list(windows.values()))
            in_process = np.concatenate(list(model_scores.values()))
            with triton_only(repository) as grpc_url:
                asyncio.run(score_through_triton(grpc_url, MODEL_NAME, all_windows[:64]))  # warm-up
                triton_scores, _, seconds = asyncio.run(score_through_triton(grpc_url, MODEL_NAME, all_windows))
            triton_result = {
                "triton_fps": total_frames / seconds,
                "triton_max_abs_score_difference": float(np.max(np.abs(triton_scores - in_process))),
                "triton_client": "gRPC aio, 16 concurrent streams of 1-frame requests, dynamic batching",
            }

    results = {
        "model": detection_metrics(labels, model_scores, threshold),
        "baseline": {
            "name": "frame difference (max patch MSE vs. the previous frame)",
            **detection_metrics(labels, baseline_scores),
        },
        "selection": {
            "rule": "chosen label-free at training: highest AUROC on synthetic anomalies in held-out normal clips "
            "(triton_models.video.selection); test AUROCs of all candidates are reported after the choice, never "
            "used for it",
            "chosen": next((row["name"] for row in selection if row.get("chosen")), None),
            "candidates": candidates,
        },
        "inprocess_fps": total_frames / scoring_seconds,
        **triton_result,
        "settings": {
            "model": json.loads(config.to_json()),
            "threshold": threshold,
            "threshold_quantile": quantile,
            "holdout_clips": holdout,
            "steps": steps if model_path is None else None,
            "threads": threads,
            "train_seconds": train_seconds,
            "selection_seconds": selection_seconds,
            "loaded_model": str(model_path) if model_path else None,
            "test_frames": total_frames,
            "first_frames": "the first K frames repeat the clip's first frame as missing context (causal)",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"{__import__('os').cpu_count()} cores",
            "wall_seconds": time.perf_counter() - started,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)
        plot_clip_scores(labels, model_scores, baseline_scores, threshold, plots / "clip_scores.png")
        pooled = np.concatenate(list(labels.values()))
        plot_roc(
            pooled,
            {
                "diffusion": np.concatenate(list(model_scores.values())),
                "frame difference": np.concatenate(list(baseline_scores.values())),
            },
            plots / "roc.png",
        )
        plot_heatmaps(_heatmap_items(model, windows, model_scores, model_maps), plots / "heatmaps.png")
    summary = {k: results[k] for k in ("inprocess_fps", "triton_fps") if k in results}
    typer.echo(
        f"model AUROC micro {results['model']['auroc_micro']:.4f} macro {results['model']['auroc_macro']:.4f}; "
        f"baseline micro {results['baseline']['auroc_micro']:.4f}; {summary}; wrote {out}"
    )
