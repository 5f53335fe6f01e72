"""Reference detectors scored in the same run as the diffusion model: PCA T-squared + Q, a per-stream level
z-score, and random scores."""

from __future__ import annotations

import numpy as np


class PcaDetector:
    """PCA on normalised rows (fit rows of every stream pooled). Score per row: max of Hotelling's T-squared in
    the principal subspace and the Q statistic (squared residual), each divided by its 99th percentile on the
    held-out normal rows, the T-squared+Q rule of the SKAB leaderboard turned into one continuous score."""

    def __init__(self, explained_variance: float = 0.9):
        self.explained_variance = explained_variance

    def fit(self, rows: np.ndarray) -> PcaDetector:
        self.mean = rows.mean(axis=0)
        _, singular, components = np.linalg.svd(rows - self.mean, full_matrices=False)
        variance = singular**2 / max(len(rows) - 1, 1)
        keep = int(np.searchsorted(np.cumsum(variance) / variance.sum(), self.explained_variance) + 1)
        self.components = components[:keep]
        self.variance = np.maximum(variance[:keep], 1e-12)
        self.scale = np.ones(2)
        return self

    def statistics(self, rows: np.ndarray) -> np.ndarray:
        centred = rows - self.mean
        projected = centred @ self.components.T
        t_squared = (projected**2 / self.variance).sum(axis=1)
        q = ((centred - projected @ self.components) ** 2).sum(axis=1)
        return np.stack([t_squared, q], axis=1)

    def calibrate(self, held_out_rows: np.ndarray) -> np.ndarray:
        self.scale = np.maximum(np.quantile(self.statistics(held_out_rows), 0.99, axis=0), 1e-12)
        return self.score(held_out_rows)

    def score(self, rows: np.ndarray) -> np.ndarray:
        return (self.statistics(rows) / self.scale).max(axis=1)


def level_scores(windows: np.ndarray, channels: list[int]) -> np.ndarray:
    """How far a stream has moved from its normal level: the largest absolute window mean over ``channels`` of
    normalised windows [n, length, channels], in the stream's fit standard deviations. Blind to any change of shape
    or of the relation between channels that keeps each channel's mean."""
    return np.abs(windows[:, :, channels].mean(axis=1)).max(axis=1)


def random_scores(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(count)
