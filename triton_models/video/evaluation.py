"""Video evaluation: frame-level detection metrics, causal scoring of labelled test clips, and the plots.

Test folders hold clip folders and ``labels.csv`` with ``video,frame,anomalous`` (frame = 0-based index into the
clip's sorted files). Scoring is causal: a frame is scored from itself and its K predecessors only; the first K
frames of a clip use the clip's first frame in place of the missing predecessors, so every labelled frame has a score.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import matplotlib
import numpy as np
import torch
from scipy.stats import rankdata

from triton_models.progress import progress_bar
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import (
    FrameDiffusion,
    frame_difference_scores,
    score_batches,
    score_configs,
    to_unit,
)
from triton_models.video.frames import causal_windows, load_clips

matplotlib.use("Agg")
from matplotlib import pyplot as plt


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties count half); nan without both classes."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: precision averaged over the ranks of the positives (scores sorted high to low)."""
    order = np.argsort(-scores, kind="mergesort")
    hits = labels[order] == 1
    if not hits.any():
        return float("nan")
    precision_at_hits = np.cumsum(hits)[hits] / (np.flatnonzero(hits) + 1)
    return float(precision_at_hits.mean())


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, kind="mergesort")
    sorted_labels = labels[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]
    tps = np.cumsum(sorted_labels)[distinct]
    fps = (distinct + 1) - tps
    return np.r_[0.0, fps / max(1, len(labels) - labels.sum())], np.r_[0.0, tps / max(1, labels.sum())]


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    """Equal error rate: where the false positive rate meets the miss rate on the ROC curve."""
    fpr, tpr = roc_curve(labels, scores)
    fnr = 1 - tpr
    index = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[index] + fnr[index]) / 2)


def detection_metrics(
    labels_by_clip: dict[str, np.ndarray], scores_by_clip: dict[str, np.ndarray], threshold: float | None = None
) -> dict[str, object]:
    labels = np.concatenate(list(labels_by_clip.values()))
    scores = np.concatenate([scores_by_clip[clip] for clip in labels_by_clip])
    per_clip = {clip: auroc(labels_by_clip[clip], scores_by_clip[clip]) for clip in labels_by_clip}
    defined = [value for value in per_clip.values() if np.isfinite(value)]
    metrics: dict[str, object] = {
        "auroc_micro": auroc(labels, scores),
        "auroc_macro": float(np.mean(defined)) if defined else float("nan"),
        "auprc_micro": auprc(labels, scores),
        "eer_micro": eer(labels, scores),
        "auroc_per_clip": per_clip,
    }
    if threshold is not None:
        predicted = scores > threshold
        tp = int((predicted & (labels == 1)).sum())
        fp = int((predicted & (labels == 0)).sum())
        fn = int((~predicted & (labels == 1)).sum())
        metrics["at_threshold"] = {
            "threshold": threshold,
            "precision": tp / max(1, tp + fp),
            "recall": tp / max(1, tp + fn),
            "false_positive_rate": fp / max(1, int((labels == 0).sum())),
        }
    return metrics


def plot_clip_scores(
    labels_by_clip: dict[str, np.ndarray],
    model_scores: dict[str, np.ndarray],
    baseline_scores: dict[str, np.ndarray],
    threshold: float,
    path: Path,
) -> None:
    clips = list(labels_by_clip)
    fig, axes = plt.subplots(len(clips), 1, figsize=(9, 2.1 * len(clips)), squeeze=False)
    for ax, clip in zip(axes[:, 0], clips, strict=True):
        labels = labels_by_clip[clip]
        frames = np.arange(len(labels))
        ax.fill_between(
            frames,
            0,
            1,
            where=labels == 1,
            transform=ax.get_xaxis_transform(),
            color="tab:red",
            alpha=0.12,
            step="mid",
            label="labelled anomalous",
        )
        ax.plot(frames, model_scores[clip], color="tab:blue", lw=1.2, label="diffusion score")
        ax.axhline(threshold, color="tab:blue", ls="--", lw=0.8, label="threshold (normal clips)")
        twin = ax.twinx()
        twin.plot(frames, baseline_scores[clip], color="tab:gray", lw=0.8, alpha=0.8, label="frame difference")
        twin.set_ylabel("baseline", color="tab:gray")
        ax.set_ylabel(f"clip {clip}")
        ax.set_yscale("log")
        twin.set_yscale("log")
    axes[0, 0].legend(loc="upper left", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(labels: np.ndarray, curves: dict[str, np.ndarray], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, scores in curves.items():
        fpr, tpr = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auroc(labels, scores):.3f})")
    ax.plot([0, 1], [0, 1], color="k", lw=0.5, ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("frame-level ROC, pooled")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_heatmaps(items: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]], path: Path) -> None:
    """items: (title, observed frame [H, W], predicted frame [H, W], anomaly map [h, w], score)."""
    fig, axes = plt.subplots(len(items), 3, figsize=(9, 2.3 * len(items)), squeeze=False)
    for row, (title, observed, predicted, anomaly_map, score) in zip(axes, items, strict=True):
        height, width = observed.shape
        row[0].imshow(observed, cmap="gray", vmin=0, vmax=255)
        row[0].set_title(f"{title}: observed", fontsize=8)
        row[1].imshow(predicted, cmap="gray", vmin=0, vmax=255)
        row[1].set_title("predicted from the past", fontsize=8)
        row[2].imshow(observed, cmap="gray", vmin=0, vmax=255)
        row[2].imshow(anomaly_map, cmap="inferno", alpha=0.55, extent=(0, width, height, 0), interpolation="bilinear")
        row[2].set_title(f"anomaly map (score {score:.4f})", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@dataclass
class ClipScores:
    """Per labelled test clip: labels [T], windows [T, K+1, H, W], model scores and maps, baseline scores."""

    labels: dict[str, np.ndarray]
    windows: dict[str, np.ndarray]
    model_scores: dict[str, np.ndarray]
    model_maps: dict[str, np.ndarray]
    baseline_scores: dict[str, np.ndarray]
    scoring_seconds: float  # in-process model scoring only

    @property
    def frames(self) -> int:
        return sum(len(w) for w in self.windows.values())


def read_labels(test_root: Path) -> dict[str, dict[int, int]]:
    labels: dict[str, dict[int, int]] = {}
    with (test_root / "labels.csv").open() as handle:
        for row in csv.DictReader(handle):
            labels.setdefault(row["video"], {})[int(row["frame"])] = int(row["anomalous"])
    return labels


def score_test_clips(model: FrameDiffusion, test_root: Path) -> ClipScores:
    """Score every labelled clip under ``test_root`` causally, with the model and with frame differencing."""
    config = model.config
    clips = load_clips(test_root, config.width, config.height)
    table = read_labels(test_root)
    labels = {c: np.array([table[c][i] for i in range(len(clips[c]))]) for c in clips if c in table}
    windows = {c: causal_windows(clips[c], config.context) for c in labels}
    model_scores, model_maps, baseline_scores = {}, {}, {}
    scoring_seconds = 0.0
    for clip in progress_bar(labels, desc="score test clips"):
        started = time.perf_counter()
        model_scores[clip], model_maps[clip] = score_batches(model, windows[clip])
        scoring_seconds += time.perf_counter() - started
        baseline_scores[clip] = frame_difference_scores(torch.from_numpy(windows[clip]), config)[0].numpy()
    return ClipScores(labels, windows, model_scores, model_maps, baseline_scores, scoring_seconds)


def candidate_config(base: VideoModelConfig, row: dict[str, object]) -> VideoModelConfig:
    """The model config of one row of the selection table (model card ``scoring_selection.candidates``)."""
    return replace(
        base,
        scoring=str(row["scoring"]),
        noise_level=float(row["noise_level"] or base.noise_level),  # type: ignore[arg-type]
        copy_ratio_floor=float(row["copy_ratio_floor"]),  # type: ignore[arg-type]
        motion_weight=float(row.get("motion_weight", 0.0)),  # type: ignore[arg-type]  # absent in older cards
        motion=str(row.get("motion", base.motion)),  # type: ignore[arg-type]
    )


def candidates_on_test(
    model: FrameDiffusion, test: ClipScores, selection: list[dict[str, object]]
) -> list[dict[str, object]]:
    """The selection table with each candidate's pooled test AUROC added, for the record (after the choice)."""
    candidates = [row for row in selection if "scoring" in row]  # the baseline's row has no scoring
    configs = [candidate_config(model.config, row) for row in candidates]
    clips = list(test.labels)
    windows = np.concatenate([test.windows[clip] for clip in clips])
    labels = np.concatenate([test.labels[clip] for clip in clips])
    test_auroc = {
        row["name"]: auroc(labels, scores)
        for row, scores in zip(candidates, score_configs(model, windows, configs), strict=True)
    }
    return [
        {**row, "test_auroc_micro": test_auroc[row["name"]]} if row["name"] in test_auroc else row for row in selection
    ]


def evaluation_results(
    model: FrameDiffusion, test: ClipScores, threshold: float, selection: list[dict[str, object]]
) -> dict[str, object]:
    """Model and baseline metrics, the selection table with test AUROCs, and the in-process throughput."""
    return {
        "model": detection_metrics(test.labels, test.model_scores, threshold),
        "baseline": {
            "name": "frame difference (max patch MSE vs. the previous frame)",
            **detection_metrics(test.labels, test.baseline_scores),
        },
        "selection": {
            "rule": "chosen label-free at training: highest AUROC on synthetic anomalies in held-out normal clips "
            "(triton_models.video.selection); test AUROCs of all candidates are reported after the choice, never "
            "used for it",
            "chosen": next((row["name"] for row in selection if row.get("chosen")), None),
            "candidates": candidates_on_test(model, test, selection),
        },
        "inprocess_fps": test.frames / test.scoring_seconds,
    }


def write_plots(model: FrameDiffusion, test: ClipScores, threshold: float, folder: Path) -> None:
    """Scores per clip, the pooled ROC, and the highest-scoring frame of the first clips with prediction and map."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_clip_scores(test.labels, test.model_scores, test.baseline_scores, threshold, folder / "clip_scores.png")
    curves = {
        "diffusion": np.concatenate(list(test.model_scores.values())),
        "frame difference": np.concatenate(list(test.baseline_scores.values())),
    }
    plot_roc(np.concatenate(list(test.labels.values())), curves, folder / "roc.png")
    plot_heatmaps(_heatmap_items(model, test), folder / "heatmaps.png")


def _heatmap_items(
    model: FrameDiffusion, test: ClipScores, count: int = 4
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    items = []
    for clip in list(test.windows)[:count]:
        index = int(np.argmax(test.model_scores[clip]))
        window = torch.from_numpy(test.windows[clip][index : index + 1])
        predicted = model.prediction(to_unit(window))[0, 0]
        predicted_uint8 = ((predicted.numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        items.append(
            (
                f"clip {clip} frame {index}",
                test.windows[clip][index, -1],
                predicted_uint8,
                test.model_maps[clip][index],
                float(test.model_scores[clip][index]),
            )
        )
    return items
