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

from triton_models.names import FORECAST, FRAME_DIFFERENCE, OPTICAL_FLOW, RECONSTRUCT, VideoMotion, VideoScoring
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, frame_difference_scores, score_configs
from triton_models.video.evaluation import auroc
from triton_models.video.frames import causal_windows
from triton_models.video.synthetic import SyntheticEvent, moving_object, reverse_play, speed_up

TIE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Candidate:
    name: str
    scoring: VideoScoring = FORECAST
    noise_level: float = 0.5
    copy_ratio_quantile: float | None = None  # the floor of the copy ratio: this quantile of normal copy errors
    motion_weight: float = 0.0  # > 0: the error blended geometrically with a motion map ...
    motion: VideoMotion = FRAME_DIFFERENCE  # ... the frame difference or the optical flow's magnitude

    def config(self, base: VideoModelConfig, copy_errors: np.ndarray) -> VideoModelConfig:
        floor = 0.0 if self.copy_ratio_quantile is None else float(np.quantile(copy_errors, self.copy_ratio_quantile))
        return replace(
            base,
            scoring=self.scoring,
            noise_level=self.noise_level,
            copy_ratio_floor=floor,
            motion_weight=self.motion_weight,
            motion=self.motion,
        )


# The copy-ratio candidates (forecast / copy error, floors q0.9 and q0.99) are no longer offered: the harder
# synthetic set ranked them first (0.938, 0.939) while on the labelled Ped2 clips they scored 0.746 and 0.868 pooled
# and no leave-one-clip-out fold chose them (benchmarks/video_leave_clips_out.json). A choice that saw dev labels.
CANDIDATES = (
    Candidate("forecast"),
    Candidate("reconstruct t0=0.3T", scoring=RECONSTRUCT, noise_level=0.3),
    Candidate("reconstruct t0=0.5T", scoring=RECONSTRUCT, noise_level=0.5),
    Candidate("forecast x frame difference (w=0.5)", motion_weight=0.5),
    Candidate(
        "reconstruct t0=0.5T x frame difference (w=0.5)", scoring=RECONSTRUCT, noise_level=0.5, motion_weight=0.5
    ),
    Candidate("forecast x optical flow (w=0.5)", motion_weight=0.5, motion=OPTICAL_FLOW),
    Candidate("forecast x optical flow (w=0.75)", motion_weight=0.75, motion=OPTICAL_FLOW),
    Candidate(
        "reconstruct t0=0.5T x optical flow (w=0.5)",
        scoring=RECONSTRUCT,
        noise_level=0.5,
        motion_weight=0.5,
        motion=OPTICAL_FLOW,
    ),
)
BASELINE_NAME = "baseline: frame difference"


@dataclass(frozen=True)
class SyntheticSet:
    """Windows [N, K+1, H, W] uint8 of normal frames and of synthetic anomalous frames, the events, and the event
    kind of every anomalous frame."""

    normal: np.ndarray
    anomalous: np.ndarray
    events: list[SyntheticEvent]
    kinds: np.ndarray

    def labels(self) -> np.ndarray:
        return np.r_[np.zeros(len(self.normal), dtype=np.int64), np.ones(len(self.anomalous), dtype=np.int64)]

    def aurocs(self, normal_scores: np.ndarray, anomalous_scores: np.ndarray) -> dict[str, float]:
        """AUROC of all anomalous frames, then of each event kind's, against all normal frames."""
        result = {"all": auroc(self.labels(), np.r_[normal_scores, anomalous_scores])}
        negatives = np.zeros(len(normal_scores), dtype=np.int64)
        for kind in dict.fromkeys(self.kinds.tolist()):
            positives = anomalous_scores[self.kinds == kind]
            result[kind] = auroc(
                np.r_[negatives, np.ones(len(positives), dtype=np.int64)], np.r_[normal_scores, positives]
            )
        return result


EventMaker = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray, SyntheticEvent]]


def event_mix(height: int, width: int) -> list[EventMaker]:
    """One of each kind per held-out clip (two of the plain fast object). Sizes and speeds are fractions of the
    frame, so the set means the same at any model resolution; walkers of the normal scene take ~190 frames to
    cross it and are ~3/16 of the height tall, 1/12 of the width wide."""
    walker = (max(1, 3 * height // 16), max(1, width // 12))
    small = (max(1, walker[0] // 2), max(1, walker[1] // 2))

    def fast(rng: np.random.Generator) -> float:
        return width / float(rng.uniform(48, 128))

    def walking(rng: np.random.Generator) -> float:
        return width / float(rng.uniform(110, 190))

    return [
        lambda c, d, r: moving_object(c, d, r, speed=fast(r), size=walker),
        lambda c, d, r: moving_object(c, d, r, speed=fast(r), size=walker),
        lambda c, d, r: moving_object(c, d, r, speed=fast(r), size=walker, contrast=0.2, kind="dim_object"),
        lambda c, d, r: moving_object(c, d, r, speed=fast(r), size=small, kind="small_object"),
        lambda c, d, r: moving_object(
            c, d, r, speed=width / float(r.uniform(100, 150)), size=walker, kind="slow_object"
        ),
        lambda c, d, r: moving_object(c, d, r, speed=walking(r), size=walker, vertical=True, kind="across_walkway"),
        lambda c, d, r: moving_object(
            c, d, r, speed=fast(r), size=walker, start=0, entered=float(r.uniform(0.2, 0.6)), kind="from_first_frame"
        ),
        lambda c, d, r: speed_up(c, r, stride=2, length=15),
        lambda c, d, r: reverse_play(c, r, length=30),
    ]


def synthetic_set(
    held_clips: list[np.ndarray],
    donor_clips: list[np.ndarray],
    context: int,
    seed: int = 0,
    frames_per_event: int = 24,
) -> SyntheticSet:
    """Every event of :func:`event_mix` injected into each held-out clip, each in its own copy of the clip, objects
    cut from ``donor_clips``. At most ``frames_per_event`` evenly spaced frames of each event are kept (a long slow
    crossing would otherwise outweigh the rest, and scoring costs time)."""
    rng = np.random.default_rng(seed)
    anomalous, events, kinds = [], [], []
    for clip in held_clips:
        for make in event_mix(*clip.shape[1:]):
            frames, labels, event = make(clip, donor_clips[int(rng.integers(len(donor_clips)))], rng)
            event_windows = causal_windows(frames, context)[labels == 1]
            keep = np.unique(np.linspace(0, len(event_windows) - 1, min(frames_per_event, len(event_windows))).round())
            anomalous.append(event_windows[keep.astype(int)])
            kinds += [event.kind] * len(keep)
            events.append(event)
    normal = np.concatenate([causal_windows(clip, context) for clip in held_clips])
    return SyntheticSet(normal, np.concatenate(anomalous), events, np.array(kinds))


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
    (name, settings, synthetic AUROC overall and per event kind), with the frame-difference baseline's AUROC as the
    last row."""
    base = model.config
    copy_errors = frame_difference_scores(torch.from_numpy(synthetic.normal), base)[1].numpy()
    configs = [candidate.config(base, copy_errors) for candidate in candidates]
    normal = score_configs(model, synthetic.normal, configs)
    anomalous = score_configs(model, synthetic.anomalous, configs)
    table: list[dict[str, object]] = []
    for candidate, config, normal_scores, anomalous_scores in zip(candidates, configs, normal, anomalous, strict=True):
        by_kind = synthetic.aurocs(normal_scores, anomalous_scores)
        table.append(
            {
                "name": candidate.name,
                "scoring": config.scoring,
                "noise_level": config.noise_level if config.scoring == RECONSTRUCT else None,
                "copy_ratio_floor": config.copy_ratio_floor,
                "motion_weight": config.motion_weight,
                "motion": config.motion,
                "synthetic_auroc": by_kind.pop("all"),
                "synthetic_auroc_by_kind": by_kind,
            }
        )
    best = best_candidate([float(row["synthetic_auroc"]) for row in table])
    for index, row in enumerate(table):
        row["chosen"] = index == best

    def baseline(windows: np.ndarray) -> np.ndarray:
        return frame_difference_scores(torch.from_numpy(windows), base)[0].numpy()

    by_kind = synthetic.aurocs(baseline(synthetic.normal), baseline(synthetic.anomalous))
    table.append(
        {
            "name": BASELINE_NAME,
            "synthetic_auroc": by_kind.pop("all"),
            "synthetic_auroc_by_kind": by_kind,
            "chosen": False,
        }
    )
    return candidates[best], configs[best], table


def selection_spread(table: list[dict[str, object]]) -> dict[str, float]:
    """Highest minus lowest synthetic AUROC among the candidates (not the baseline), overall and per event kind:
    how far the synthetic set tells the candidates apart."""
    rows = [row for row in table if row["name"] != BASELINE_NAME]
    spread = {"all": np.ptp([float(row["synthetic_auroc"]) for row in rows])}
    for kind in rows[0]["synthetic_auroc_by_kind"]:  # type: ignore[union-attr]
        spread[kind] = np.ptp([float(row["synthetic_auroc_by_kind"][kind]) for row in rows])  # type: ignore[index]
    return {kind: float(value) for kind, value in spread.items()}
