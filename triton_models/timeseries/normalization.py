"""Per-stream standardisation fitted on each stream's training data, plus a pooled ``default`` for unknown streams."""

from __future__ import annotations

import numpy as np

DEFAULT_STREAM = "default"


def _robust_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Median centre resists spikes in the training rows; the standard deviation (not the IQR) as scale, because
    # quantised sensors often have IQR 0 on a few hundred rows. A relative floor keeps constant channels finite.
    center = np.median(values, axis=0)
    scale = values.std(axis=0)
    floor = 1e-3 * np.maximum(np.abs(center), 1e-3)
    return center.astype(np.float64), np.maximum(scale, floor).astype(np.float64)


class StreamNormalizer:
    """``normalise(x, stream) = (x - center[stream]) / scale[stream]``; unknown streams use ``default``."""

    def __init__(self, stats: dict[str, tuple[np.ndarray, np.ndarray]]):
        if DEFAULT_STREAM not in stats:
            raise ValueError("normaliser needs a pooled 'default' entry")
        self.stats = stats

    @classmethod
    def fit(cls, tables: dict[str, np.ndarray]) -> StreamNormalizer:
        stats = {name: _robust_stats(values) for name, values in tables.items()}
        stats[DEFAULT_STREAM] = _robust_stats(np.concatenate(list(tables.values()), axis=0))
        return cls(stats)

    def params(self, stream: str) -> tuple[np.ndarray, np.ndarray]:
        return self.stats.get(stream, self.stats[DEFAULT_STREAM])

    def normalise(self, values: np.ndarray, stream: str) -> np.ndarray:
        center, scale = self.params(stream)
        return ((values - center) / scale).astype(np.float32)

    def to_json(self) -> dict:
        return {name: {"center": c.tolist(), "scale": s.tolist()} for name, (c, s) in self.stats.items()}

    @classmethod
    def from_json(cls, data: dict) -> StreamNormalizer:
        return cls({name: (np.array(v["center"]), np.array(v["scale"])) for name, v in data.items()})
