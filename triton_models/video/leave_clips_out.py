"""Leave-clips-out evaluation on labelled clips: what the scores predict for clips nothing was tuned on.

The model trains on normal clips only, so its weights never see a labelled clip. What can see labels is a choice
made on the labelled clips: which scoring setting to serve, which threshold to alarm at. Here every such choice is
made on the other clips and measured on the held-out one (leave one clip out); the label-free choice and threshold
(synthetic anomalies and normal clips only) are measured on all clips as they are. Metrics pool raw scores over all
frames of all clips: no per-clip normalisation, which would need the test clip's own frames.

The hard cases of unseen footage, built from the labelled clips:

- anomalous throughout: clips whose first frame is already anomalous (an anomalous object in view from the start:
  no change within the clip gives it away); their anomalous frames against the normal frames of the other clips;
- enters mid-clip: clips that start normal; the delay from the first anomalous frame to the first alarm at the
  label-free threshold, alarms before it, and the AUROC in a window around the entry.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from triton_models.video.evaluation import auprc, auroc, roc_curve

ENTRY_WINDOW = 30  # frames either side of an anomaly's entry (3 s at Ped2's 10 frames/s)
FOR_FRAMES = (1, 3, 5, 10)  # an alert's `for`: consecutive frames above the threshold before it fires


@dataclass(frozen=True)
class ScoredClips:
    """Per clip: labels [T] and, per scorer name, scores [T]; per scorer, its label-free threshold."""

    labels: dict[str, np.ndarray]
    scores: dict[str, dict[str, np.ndarray]]
    thresholds: dict[str, float]

    @property
    def clips(self) -> list[str]:
        return list(self.labels)

    def pooled(self, clips: list[str], scorer: str) -> tuple[np.ndarray, np.ndarray]:
        return (
            np.concatenate([self.labels[c] for c in clips]),
            np.concatenate([self.scores[scorer][c] for c in clips]),
        )


def confusion(labels: np.ndarray, alarms: np.ndarray) -> dict[str, float]:
    tp = int((alarms & (labels == 1)).sum())
    fp = int((alarms & (labels == 0)).sum())
    return {
        "recall": tp / max(1, int(labels.sum())),
        "false_positive_rate": fp / max(1, int((labels == 0).sum())),
        "precision": tp / max(1, tp + fp),
    }


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score above which alarms maximise recall minus false-positive rate (Youden's J) on these frames."""
    fpr, tpr = roc_curve(labels, scores)
    ordered = np.unique(scores)[::-1]  # roc_curve's points after the first are the distinct scores, high to low
    best = int(np.argmax(tpr[1:] - fpr[1:]))
    # Alarm when score > threshold: just below the best cut-off score, halfway to the next lower one.
    lower = ordered[best + 1] if best + 1 < len(ordered) else ordered[best] - 1.0
    return float((ordered[best] + lower) / 2)


def persistent_alarms(scores: np.ndarray, threshold: float, frames: int) -> np.ndarray:
    """Causal: frame t alarms when it and its ``frames - 1`` predecessors all score above ``threshold``."""
    run = np.zeros(len(scores), dtype=np.int64)
    for index, above in enumerate(scores > threshold):
        run[index] = run[index - 1] + 1 if above and index else int(above)
    return run >= frames


def alert_for_frames(data: ScoredClips, scorer: str) -> dict[str, object]:
    """Per `for` duration at the label-free threshold: frame recall and false-positive rate of the firing alert,
    and its delay after an anomaly enters a clip that started normal (None: it never fired)."""
    threshold, result = data.thresholds[scorer], {}
    for frames in FOR_FRAMES:
        alarms = {c: persistent_alarms(data.scores[scorer][c], threshold, frames) for c in data.clips}
        delays = {}
        for clip in data.clips:
            labels = data.labels[clip]
            if labels[0] == 0 and labels.any():
                onset = int(np.argmax(labels == 1))
                fired = np.flatnonzero(alarms[clip][onset:])
                delays[clip] = int(fired[0]) if len(fired) else None
        labels = np.concatenate([data.labels[c] for c in data.clips])
        result[str(frames)] = {
            **confusion(labels, np.concatenate([alarms[c] for c in data.clips])),
            "entry_delay_frames": delays,
        }
    return result


def anomalous_throughout(data: ScoredClips, scorer: str) -> dict[str, object]:
    """Clips anomalous from their first frame: their anomalous frames against normal frames of other clips."""
    throughout = [c for c in data.clips if data.labels[c][0] == 1]
    starting_normal = [c for c in data.clips if data.labels[c][0] == 0]
    per_clip = {}
    for clip in throughout:
        others = [c for c in data.clips if c != clip]
        negatives = np.concatenate([data.scores[scorer][c][data.labels[c] == 0] for c in others])
        positives = data.scores[scorer][clip][data.labels[clip] == 1]
        per_clip[clip] = _auroc_of(positives, negatives)
    positives = np.concatenate([data.scores[scorer][c][data.labels[c] == 1] for c in throughout] or [np.empty(0)])
    negatives = np.concatenate([data.scores[scorer][c][data.labels[c] == 0] for c in starting_normal] or [np.empty(0)])
    return {
        "clips": throughout,
        "negatives_from": starting_normal,
        "pooled_auroc": _auroc_of(positives, negatives),
        "per_clip_auroc": per_clip,
    }


def enters_mid_clip(data: ScoredClips, scorer: str, window: int = ENTRY_WINDOW) -> dict[str, object]:
    """Clips that start normal and turn anomalous: delay to the first alarm, early alarms, AUROC around entry."""
    threshold = data.thresholds[scorer]
    per_clip, window_labels, window_scores = {}, [], []
    for clip in data.clips:
        labels, scores = data.labels[clip], data.scores[scorer][clip]
        if labels[0] == 1 or not labels.any():
            continue
        onset = int(np.argmax(labels == 1))
        alarms_after = np.flatnonzero(scores[onset:] > threshold)
        span = slice(max(0, onset - window), onset + window)
        window_labels.append(labels[span])
        window_scores.append(scores[span])
        per_clip[clip] = {
            "entry_frame": onset,
            "delay_frames": int(alarms_after[0]) if len(alarms_after) else None,
            "alarms_before_entry": int((scores[:onset] > threshold).sum()),
            "window_auroc": auroc(labels[span], scores[span]),
        }
    pooled = auroc(np.concatenate(window_labels), np.concatenate(window_scores)) if window_labels else float("nan")
    return {"window_frames": window, "pooled_window_auroc": pooled, "per_clip": per_clip}


def scorer_metrics(data: ScoredClips, scorer: str) -> dict[str, object]:
    """Pooled and per-clip AUROC, the label-free threshold's and the leave-one-clip-out threshold's confusion
    rates, and both hard cases, for one scorer."""
    labels, scores = data.pooled(data.clips, scorer)
    held_labels, held_alarms = [], []
    for clip in data.clips:
        threshold = youden_threshold(*data.pooled([c for c in data.clips if c != clip], scorer))
        held_labels.append(data.labels[clip])
        held_alarms.append(data.scores[scorer][clip] > threshold)
    return {
        "pooled_auroc": auroc(labels, scores),
        "pooled_auprc": auprc(labels, scores),
        "per_clip_auroc": {c: auroc(data.labels[c], data.scores[scorer][c]) for c in data.clips},
        "label_free_threshold": {
            "threshold": data.thresholds[scorer],
            **confusion(labels, scores > data.thresholds[scorer]),
        },
        "threshold_chosen_on_other_clips": {
            "rule": "per held-out clip: Youden's J on the other clips",
            **confusion(np.concatenate(held_labels), np.concatenate(held_alarms)),
        },
        "anomalous_throughout": anomalous_throughout(data, scorer),
        "enters_mid_clip": enters_mid_clip(data, scorer),
        "alert_for_frames": alert_for_frames(data, scorer),
    }


def choice_on_other_clips(data: ScoredClips, candidates: list[str]) -> dict[str, object]:
    """Leave one clip out: the candidate with the best pooled AUROC on the other clips scores the held-out clip
    (a selection that sees labels, measured where it did not). The held-out scores of all folds are pooled: where
    folds choose differently, this pools scores of different candidates, as serving the fold's choice would."""
    folds, labels, scores = [], [], []
    for clip in data.clips:
        others = [c for c in data.clips if c != clip]
        chosen = max(candidates, key=lambda name: auroc(*data.pooled(others, name)))
        folds.append({"held_out": clip, "chosen": chosen, "auroc_on_other_clips": auroc(*data.pooled(others, chosen))})
        labels.append(data.labels[clip])
        scores.append(data.scores[chosen][clip])
    return {
        "folds": folds,
        "pooled_auroc": auroc(np.concatenate(labels), np.concatenate(scores)),
        "per_clip_auroc": {
            fold["held_out"]: auroc(lab, sc) for fold, lab, sc in zip(folds, labels, scores, strict=True)
        },
    }


def leave_clips_out(
    data: ScoredClips,
    candidates: list[str],
    label_free_choice: str,
    baseline: str,
    other_baselines: tuple[str, ...] = (),
) -> dict[str, object]:
    """Every scorer's metrics, the label-free choice against the baseline, and the choice made on other clips;
    ``other_baselines`` are measured alike, for reference."""
    per_scorer = {name: scorer_metrics(data, name) for name in [*candidates, baseline, *other_baselines]}
    chosen, reference = per_scorer[label_free_choice], per_scorer[baseline]
    return {
        "clips": data.clips,
        "frames": int(sum(len(v) for v in data.labels.values())),
        "anomalous_frames": int(sum(int(v.sum()) for v in data.labels.values())),
        "label_free_choice": label_free_choice,
        "baseline": baseline,
        "summary": {
            "label_free_choice_pooled_auroc": chosen["pooled_auroc"],
            "baseline_pooled_auroc": reference["pooled_auroc"],
            "margin_over_baseline": chosen["pooled_auroc"] - reference["pooled_auroc"],  # type: ignore[operator]
            "anomalous_throughout": {
                "label_free_choice": chosen["anomalous_throughout"]["pooled_auroc"],  # type: ignore[index]
                "baseline": reference["anomalous_throughout"]["pooled_auroc"],  # type: ignore[index]
            },
            "enters_mid_clip_window_auroc": {
                "label_free_choice": chosen["enters_mid_clip"]["pooled_window_auroc"],  # type: ignore[index]
                "baseline": reference["enters_mid_clip"]["pooled_window_auroc"],  # type: ignore[index]
            },
            "label_free_threshold": {
                "label_free_choice": chosen["label_free_threshold"],
                "baseline": reference["label_free_threshold"],
            },
        },
        "choice_on_other_clips": choice_on_other_clips(data, candidates),
        "scorers": per_scorer,
    }


def _auroc_of(positives: np.ndarray, negatives: np.ndarray) -> float:
    labels = np.r_[np.ones(len(positives), dtype=np.int64), np.zeros(len(negatives), dtype=np.int64)]
    return auroc(labels, np.r_[positives, negatives])
