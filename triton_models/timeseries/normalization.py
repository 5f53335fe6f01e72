"""Per-stream standardisation fitted on each stream's training data, plus a pooled ``default`` for unknown streams."""

from __future__ import annotations

import numpy as np

from triton_models.names import POOLED_STREAM


def flag_channels(values: np.ndarray) -> np.ndarray:
    """[C] bool: channels with at most two distinct values in ``values`` [rows, C] (on/off flags, commands)."""
    return np.array([np.unique(column[np.isfinite(column)]).size <= 2 for column in values.T], dtype=bool)


def _robust_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Median centre resists spikes in the training rows; the standard deviation (not the IQR) as scale, because
    # quantised sensors often have IQR 0 on a few hundred rows. A relative floor keeps constant channels finite.
    center = np.median(values, axis=0)
    scale = np.maximum(values.std(axis=0), 1e-3 * np.maximum(np.abs(center), 1e-3))
    # A flag (at most two values in the training rows) gets at least half its range, the standard deviation of a
    # flag that is on half the time, so that a switch is at most two units: a flag that rarely fired has a tiny
    # standard deviation, and one that never fired none, which turned a command flag's first firing into a value of
    # 10^6 in the network's input (the ``commands`` plant of benchmarks/ts_suite.py). A flag that never switched
    # counts its magnitude (at least 1) as its range.
    low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    flags = flag_channels(values)
    flag_range = np.where(high > low, high - low, np.maximum(np.abs(center), 1.0))
    scale = np.where(flags, np.maximum(scale, flag_range / 2), scale)
    return center.astype(np.float64), scale.astype(np.float64)


class StreamNormalizer:
    """``normalise(x, stream) = (x - center[stream]) / scale[stream]``; unknown streams use ``default``."""

    def __init__(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]):
        if POOLED_STREAM not in stats:
            raise ValueError("normaliser needs a pooled 'default' entry")
        self.stats = stats

    @classmethod
    def fit(cls, tables: dict[str, np.ndarray]) -> StreamNormalizer:
        stats = {name: _robust_stats(values) for name, values in tables.items()}
        stats[POOLED_STREAM] = _robust_stats(np.concatenate(list(tables.values()), axis=0))
        return cls(stats)

    def params(self, stream: str) -> tuple[np.ndarray, np.ndarray]:
        return self.stats.get(stream, self.stats[POOLED_STREAM])

    def normalise(self, values: np.ndarray, stream: str) -> np.ndarray:
        center, scale = self.params(stream)
        return ((values - center) / scale).astype(np.float32)

    def to_json(self) -> dict:
        return {name: {"center": c.tolist(), "scale": s.tolist()} for name, (c, s) in self.stats.items()}

    @classmethod
    def from_json(cls, data: dict) -> StreamNormalizer:
        return cls({name: (np.array(v["center"]), np.array(v["scale"])) for name, v in data.items()})


# A channel counts as slow when both hold (medians over the streams): it is smooth, its von Neumann ratio (mean
# squared step / variance = 2 x (1 - lag-1 autocorrelation): about 2 for sensor noise) below SLOW_STEP_RATIO within
# blocks of a few windows, so a noisy channel whose level wanders over hours does not count; and its mean over the
# held-out rows moved more than SLOW_LEVEL_SHIFT fit standard deviations away from its mean over the fit rows (a
# smooth but bounded oscillation comes back).
SLOW_STEP_RATIO = 1.0
SLOW_LEVEL_SHIFT = 0.5


def slow_channels(fit: dict[str, np.ndarray], held_out: dict[str, np.ndarray], block: int) -> list[int]:
    """Channels whose level wanders away during normal operation (a temperature warming up over a run), from each
    stream's fit rows (smoothness within ``block`` rows) and the held-out rows that follow them. A few hundred
    normal rows cannot tell how far such a level may drift later, so the model judges these channels by their shape
    within a window, not by their level (``centre_slow_channels``)."""
    ratios, shifts = [], []
    for name, rows in fit.items():
        later = held_out.get(name)
        if len(rows) < max(block, 3) or later is None or not len(later):
            continue
        blocks = [rows[start : start + block] for start in range(0, len(rows) - block + 1, block)]
        ratios.append(np.median([_step_ratio(b) for b in blocks], axis=0))
        shifts.append(np.abs(later.mean(axis=0) - rows.mean(axis=0)) / np.maximum(rows.std(axis=0), 1e-6))
    if not ratios:
        return []
    slow = (np.median(ratios, axis=0) < SLOW_STEP_RATIO) & (np.median(shifts, axis=0) > SLOW_LEVEL_SHIFT)
    return [int(c) for c in np.flatnonzero(slow)]


def _step_ratio(rows: np.ndarray) -> np.ndarray:
    return np.mean(np.diff(rows, axis=0) ** 2, axis=0) / np.maximum(rows.var(axis=0), 1e-12)


def centre_slow_channels(windows: np.ndarray, channels: list[int]) -> np.ndarray:
    """Windows [batch, length, channels] with each slow channel minus its own mean over the window."""
    if not channels:
        return windows
    centred = windows.copy()
    centred[:, :, channels] -= centred[:, :, channels].mean(axis=1, keepdims=True)
    return centred
