"""Anomaly-detection metrics on per-row labels (1 = anomalous), scores and binary predictions.

Point metrics pool rows over series; event metrics (event F1, point-adjusted F1, detection delay) work on the
contiguous anomalous segments of each series separately and pool their counts.
"""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, predictions: np.ndarray) -> dict[str, int]:
    labels, predictions = np.asarray(labels).astype(bool), np.asarray(predictions).astype(bool)
    return {
        "tp": int((labels & predictions).sum()),
        "fp": int((~labels & predictions).sum()),
        "fn": int((labels & ~predictions).sum()),
        "tn": int((~labels & ~predictions).sum()),
    }


def skab_binary(counts: dict[str, int]) -> dict[str, float]:
    """SKAB leaderboard metrics: F1 = TP / (TP + (FP + FN) / 2), FAR = FP / (FP + TN) %, MAR = FN / (FN + TP) %."""
    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    return {
        "f1": _ratio(tp, tp + (fp + fn) / 2),
        "far": 100 * _ratio(fp, fp + tn),
        "mar": 100 * _ratio(fn, fn + tp),
    }


def precision_recall_f1(counts: dict[str, int]) -> dict[str, float]:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall)}


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def auprc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision: sum over thresholds (each distinct score) of precision x recall increment."""
    return _soft_average_precision(np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64))


def vus_pr(labels: np.ndarray, scores: np.ndarray, max_buffer: int = 64, buffers: int = 9) -> float:
    """Volume under the PR surface (Paparrizos et al., VLDB 2022), in a compact form: the mean over buffer
    lengths l in [0, max_buffer] of the average precision against range-extended soft labels, which stay 1 inside
    each anomalous segment and decay as sqrt(1 - d / (l / 2)) over d rows before and after it. l = 0 gives AUPRC;
    longer buffers forgive detections slightly early or late."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    values = [
        _soft_average_precision(_buffered_labels(labels, int(b)), scores)
        for b in np.linspace(0, max_buffer, buffers).round()
    ]
    return float(np.mean(values))


def segments(labels: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous anomalous segments as [start, stop) row ranges."""
    padded = np.concatenate([[0], np.asarray(labels).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def point_adjust(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Point adjustment (Xu et al. 2018): a segment with any detected row counts as fully detected. Inflates
    scores; only ever report it next to plain F1."""
    adjusted = np.asarray(predictions).astype(bool).copy()
    for start, stop in segments(labels):
        if adjusted[start:stop].any():
            adjusted[start:stop] = True
    return adjusted


def event_counts(labels: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    """Per series: events, detected events, sum of detection delays (rows from segment start to first alarm)."""
    predictions = np.asarray(predictions).astype(bool)
    events, detected, delay = 0, 0, 0
    for start, stop in segments(labels):
        events += 1
        hits = np.flatnonzero(predictions[start:stop])
        if hits.size:
            detected += 1
            delay += int(hits[0])
    return {"events": events, "detected": detected, "delay_sum": delay}


def event_f1(point_precision: float, events: int, detected: int) -> float:
    """Composite F1 (Garg et al., 2021): harmonic mean of event recall and point precision."""
    recall = _ratio(detected, events)
    return _ratio(2 * point_precision * recall, point_precision + recall)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [len(values)]])
    for start, stop in zip(starts, stops, strict=True):
        ranks[order[start:stop]] = (start + stop + 1) / 2
    return ranks


def _soft_average_precision(weights: np.ndarray, scores: np.ndarray) -> float:
    """Average precision with labels in [0, 1]; thresholds at distinct scores (ties enter together)."""
    total = weights.sum()
    if total == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")
    sorted_scores, sorted_weights = scores[order], weights[order]
    last_of_tie = np.concatenate([np.flatnonzero(np.diff(sorted_scores)), [len(scores) - 1]])
    true_positive = np.cumsum(sorted_weights)[last_of_tie]
    predicted = last_of_tie + 1
    precision = true_positive / predicted
    recall = true_positive / total
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def _buffered_labels(labels: np.ndarray, buffer: int) -> np.ndarray:
    soft = labels.astype(np.float64)
    half = buffer // 2
    if half == 0:
        return soft
    for start, stop in segments(labels):
        for d in range(1, half + 1):
            value = np.sqrt(1 - d / (half + 1))
            if start - d >= 0:
                soft[start - d] = max(soft[start - d], value)
            if stop - 1 + d < len(soft):
                soft[stop - 1 + d] = max(soft[stop - 1 + d], value)
    return soft
