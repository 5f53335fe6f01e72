"""Label-free choice of the scoring setting: AUROC on synthetic anomalies in held-out normal clips.

Every candidate scores (a) all frames of the held-out normal clips and (b) the event frames of synthetic anomalies
injected into copies of those clips (:mod:`triton_models.video.synthetic`). The candidate with the highest AUROC of
(b) against (a) wins; ties (within ``TIE_TOLERANCE``) go to the earlier, simpler candidate. No test label is read,
so the same procedure runs on a new camera from its normal footage alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from triton_models.names import FORECAST, RECONSTRUCT, VideoScoring
from triton_models.progress import progress_bar
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, frame_difference_scores, score_batches
from triton_models.video.evaluation import auroc
from triton_models.video.frames import causal_windows
from triton_models.video.synthetic import SyntheticEvent, fast_object, speed_up

TIE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Candidate:
    name: str
    scoring: VideoScoring = FORECAST
    noise_level: float = 0.5
    copy_ratio_quantile: float | None = None  # the floor of the copy ratio: this quantile of normal copy errors

    def config(self, base: VideoModelConfig, copy_errors: np.ndarray) -> VideoModelConfig:
        floor = 0.0 if self.copy_ratio_quantile is None else float(np.quantile(copy_errors, self.copy_ratio_quantile))
        return replace(base, scoring=self.scoring, noise_level=self.noise_level, copy_ratio_floor=floor)


CANDIDATES = (
    Candidate("forecast"),
    Candidate("reconstruct t0=0.3T", scoring=RECONSTRUCT, noise_level=0.3),
    Candidate("reconstruct t0=0.5T", scoring=RECONSTRUCT, noise_level=0.5),
    Candidate("forecast / copy error (floor q0.9)", copy_ratio_quantile=0.9),
    Candidate("forecast / copy error (floor q0.99)", copy_ratio_quantile=0.99),
)


@dataclass(frozen=True)
class SyntheticSet:
    """Windows [N, K+1, H, W] uint8 of normal frames and of synthetic anomalous frames, and the events."""

    normal: np.ndarray
    anomalous: np.ndarray
    events: list[SyntheticEvent]

    def labels(self) -> np.ndarray:
        return np.r_[np.zeros(len(self.normal), dtype=np.int64), np.ones(len(self.anomalous), dtype=np.int64)]

    def auroc(self, score: Callable[[np.ndarray], np.ndarray]) -> float:
        return auroc(self.labels(), np.r_[score(self.normal), score(self.anomalous)])


def synthetic_set(
    held_clips: list[np.ndarray],
    donor_clips: list[np.ndarray],
    context: int,
    seed: int = 0,
    objects_per_clip: int = 3,
    speed_ups_per_clip: int = 2,
) -> SyntheticSet:
    """Objects cut from ``donor_clips`` crossing each held-out clip in 48-128 frames (normal walkers need ~190), the
    size of a walker (3/16 of the height, 1/12 of the width), and local 2x fast-forwards, each event in its own copy
    of the clip. Sizes and speeds are fractions of the frame, so the set means the same at any model resolution."""
    rng = np.random.default_rng(seed)
    anomalous, events = [], []
    for clip in held_clips:
        height, width = clip.shape[1:]
        size = (max(1, 3 * height // 16), max(1, width // 12))
        injected = [
            fast_object(
                clip,
                donor_clips[int(rng.integers(len(donor_clips)))],
                rng,
                speed=width / float(rng.uniform(48, 128)),
                size=size,
            )
            for _ in range(objects_per_clip)
        ]
        injected += [speed_up(clip, rng, stride=2, length=15) for _ in range(speed_ups_per_clip)]
        for frames, labels, event in injected:
            anomalous.append(causal_windows(frames, context)[labels == 1])
            events.append(event)
    normal = np.concatenate([causal_windows(clip, context) for clip in held_clips])
    return SyntheticSet(normal, np.concatenate(anomalous), events)


def best_candidate(aurocs: list[float], tolerance: float = TIE_TOLERANCE) -> int:
    """Index of the highest AUROC; a later candidate must beat the best so far by more than ``tolerance``."""
    best = 0
    for index, value in enumerate(aurocs):
        if value > aurocs[best] + tolerance:
            best = index
    return best


def select_scoring(
    model: FrameDiffusion, synthetic: SyntheticSet, candidates: tuple[Candidate, ...] = CANDIDATES
) -> tuple[Candidate, VideoModelConfig, list[dict[str, object]]]:
    """Score ``synthetic`` with every candidate; returns the winner, its model config and the table of all
    (name, settings, synthetic AUROC), with the frame-difference baseline's AUROC as the last row."""
    base = model.config
    copy_errors = frame_difference_scores(torch.from_numpy(synthetic.normal), base)[1].numpy()
    table: list[dict[str, object]] = []
    configs = []
    try:
        for candidate in progress_bar(candidates, desc="choose the video scoring", unit="candidate"):
            model.config = candidate.config(base, copy_errors)
            configs.append(model.config)
            table.append(
                {
                    "name": candidate.name,
                    "scoring": model.config.scoring,
                    "noise_level": model.config.noise_level if model.config.scoring == RECONSTRUCT else None,
                    "copy_ratio_floor": model.config.copy_ratio_floor,
                    "synthetic_auroc": synthetic.auroc(lambda windows: score_batches(model, windows)[0]),
                }
            )
    finally:
        model.config = base
    best = best_candidate([float(row["synthetic_auroc"]) for row in table])
    for index, row in enumerate(table):
        row["chosen"] = index == best
    table.append(
        {
            "name": "baseline: frame difference",
            "synthetic_auroc": synthetic.auroc(lambda w: frame_difference_scores(torch.from_numpy(w), base)[0].numpy()),
            "chosen": False,
        }
    )
    return candidates[best], configs[best], table
