"""Label-free thresholds from scores on held-out normal data: SPOT/POT (Siffer et al., KDD 2017) with a
generalised Pareto tail, falling back to an empirical quantile when the tail fit is not trustworthy."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Threshold:
    value: float
    method: str  # "pot" | "quantile"
    risk: float  # target probability q that a normal score exceeds the threshold
    initial_level: float
    peaks: int
    shape: float | None = None
    scale: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def pot_threshold(
    scores: np.ndarray, risk: float = 1e-3, initial_level: float = 0.98, min_peaks: int = 20
) -> Threshold:
    """Threshold ``z_q`` with P(score > z_q) ~= ``risk`` under the fitted GPD tail above the ``initial_level``
    quantile: ``z_q = t + sigma/gamma * ((q n / N_t)^(-gamma) - 1)`` (``t - sigma log(q n / N_t)`` when gamma = 0).

    Falls back to the empirical (1 - risk) quantile when there are fewer than ``min_peaks`` exceedances, the fit
    fails, or the extrapolated value is not finite."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("no finite calibration scores")
    fallback = Threshold(float(np.quantile(scores, 1 - risk)), "quantile", risk, initial_level, 0)
    initial = float(np.quantile(scores, initial_level))
    peaks = scores[scores > initial] - initial
    fallback.peaks = int(peaks.size)
    if peaks.size < min_peaks or np.ptp(peaks) <= 0:
        return fallback
    try:
        shape, _, scale = stats.genpareto.fit(peaks, floc=0.0)
    except (RuntimeError, ValueError):
        return fallback
    ratio = risk * scores.size / peaks.size
    value = initial - scale * np.log(ratio) if abs(shape) < 1e-08 else initial + scale / shape * (ratio ** (-shape) - 1)
    if not np.isfinite(value) or value < initial:
        return fallback
    return Threshold(float(value), "pot", risk, initial_level, int(peaks.size), float(shape), float(scale))


def served_scale(values: np.ndarray, location: float, threshold: float) -> np.ndarray:
    """Scores on a stream's served scale: 0 at its median normal score (``location``), 1.0 at its threshold."""
    return (values - location) / max(threshold - location, 1e-12)


@dataclass
class StreamThresholds:
    """Per-stream thresholds sharing one tail model: ``threshold[s] = location[s] + z * spread[s]``."""

    thresholds: dict[str, float]
    locations: dict[str, float]  # median of each stream's normal scores
    tail: Threshold  # POT fit on the pooled robust z-scores; its value is z


def robust_location_spread(values: np.ndarray) -> tuple[float, float]:
    """Median and 1.4826 x MAD (the standard deviation of a normal) of scores, the spread floored so that a
    constant stream stays finite."""
    values = np.asarray(values, dtype=np.float64)
    location = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - location)))
    return location, max(spread, 1e-3 * abs(location), 1e-12)


def stream_thresholds(
    scores: dict[str, np.ndarray], risk: float = 1e-3, fit_scores: dict[str, np.ndarray] | None = None
) -> StreamThresholds:
    """Every stream's normal scores are standardised by their own median and MAD (score levels differ by orders of
    magnitude between streams, their shape much less); one POT threshold z on the pooled z-scores (enough points
    for a tail fit, where one stream's short held-out tail has too few) maps back to each stream.

    ``fit_scores``, the same streams' scores on the windows the model was trained on, can only raise a stream's
    threshold, to their median + z x MAD: the held-out rows are one short stretch of the stream, its last quarter,
    and a short training run shows in its fit rows operating points the held-out stretch never reached (on the
    500-row plant of benchmarks/ts_suite.py, 18 % of one stream's fit windows scored above the threshold of its 125
    held-out rows). The model's errors on rows it was trained on understate normal errors if anything, so the
    larger of the two thresholds is the one that holds."""
    locations, spreads, z_scores = {}, {}, []
    for name, values in scores.items():
        locations[name], spreads[name] = robust_location_spread(values)
        z_scores.append((np.asarray(values, dtype=np.float64) - locations[name]) / spreads[name])
    tail = pot_threshold(np.concatenate(z_scores), risk)
    thresholds = {name: locations[name] + tail.value * spreads[name] for name in scores}
    for name, values in (fit_scores or {}).items():
        if name in thresholds and len(values):
            location, spread = robust_location_spread(values)
            thresholds[name] = max(thresholds[name], location + tail.value * spread)
    return StreamThresholds(thresholds, locations, tail)


@dataclass
class BlockBound:
    """A threshold on the served scale from thinned held-out scores, with the false-alarm bound it carries."""

    value: float  # alarm when SCORE > value
    risk: float  # guaranteed bound on P(a window of a new normal block alarms): max(target, 1 / (blocks + 1))
    blocks: int
    block_windows: int

    def to_json(self) -> dict:
        return {**asdict(self), "method": "block_conformal"}


def block_conformal_threshold(served: dict[str, np.ndarray], block_windows: int, risk: float) -> BlockBound:
    """Split-conformal threshold on block maxima of each stream's held-out served scores (time order).

    Consecutive windows overlap in all but one row, so ~100 of them are a handful of independent observations, not
    100: each stream's scores are cut into non-overlapping blocks of ``block_windows`` windows (the window length:
    blocks share no row), and each block is summarised by its maximum. Pooled over streams (on the served scale a
    score means the same for every stream), K blocks give the conformal bound: if a new block of normal operation is
    exchangeable with them, P(its maximum > the ceil((1 - a)(K + 1))-th smallest block maximum) <= a. A window
    alarms only if its block's maximum does, so a is also a bound on the alarm rate of normal windows. It cannot
    go below 1 / (K + 1) (then the value is the largest block maximum); ``risk`` reports the a it holds for."""
    maxima = []
    for scores in served.values():
        blocks = len(scores) // block_windows
        if blocks:
            maxima.append(np.asarray(scores[: blocks * block_windows]).reshape(blocks, block_windows).max(axis=1))
    pooled = np.sort(np.concatenate(maxima)) if maxima else np.empty(0)
    if pooled.size == 0:
        raise ValueError(f"no stream has {block_windows} held-out windows")
    achieved = max(risk, 1.0 / (pooled.size + 1))
    rank = min(int(np.ceil((1 - achieved) * (pooled.size + 1))), pooled.size)
    return BlockBound(float(pooled[rank - 1]), achieved, int(pooled.size), block_windows)


# Drift adaptation follows the median of the last this many windows' worth of non-alarmed scores (set before any run).
DRIFT_DEPTH_WINDOWS = 4


def drift_adapted_scores(served: np.ndarray, history: np.ndarray, depth: int) -> np.ndarray:
    """DSPOT-style drift adaptation (Siffer et al. 2017) of one stream's served scores, causal: each score minus
    the median of the last ``depth`` scores that did not alarm (starting from the stream's held-out ``history``;
    the served scale puts that median at 0 on the held-out rows), so a slow rise of normal scores (a plant whose
    operating point moves on) is followed while the threshold distance stays the calibrated one: alarm when the
    adapted score > 1.0. Alarmed rows never enter the median, so an ongoing anomaly is not learned as normal; a
    fault that rises more slowly than the median follows is (the price of adapting)."""
    recent = list(np.asarray(history, dtype=np.float64)[-depth:]) or [0.0]
    adapted = np.empty(len(served), dtype=np.float64)
    for index, score in enumerate(np.asarray(served, dtype=np.float64)):
        adapted[index] = score - float(np.median(recent))
        if adapted[index] <= 1.0:
            recent.append(score)
            if len(recent) > depth:
                recent.pop(0)
    return adapted
