"""Score -> anomaly decision, with the model's calibrated threshold, optionally adapted online per stream.

Modes (``ThresholdConfig.mode``):

- ``fixed``: the model card's calibrated threshold, always.
- ``spot``: SPOT (Siffer et al., KDD 2017, "Anomaly detection in streams with extreme value theory"). Per stream,
  the first ``calibration_count`` scores are judged against the calibrated threshold and collected; then the
  initial threshold ``t`` is their ``initial_quantile`` and the excesses over ``t`` are modelled with a generalised
  Pareto distribution (fitted by the method of moments, a documented simplification of the paper's Grimshaw
  estimator). The adaptive threshold is ``z = t + sigma/gamma * ((q * n / N_t) ** -gamma - 1)`` for risk ``q``,
  ``n`` scores and ``N_t`` excesses among the last ``history`` normal scores. A score above ``z`` is an anomaly and
  is not learnt from; a score in ``(t, z]`` becomes a new excess and the fit is updated.
- ``dspot``: as ``spot`` on drift-corrected scores: each score minus the mean of the last ``drift_depth`` normal
  scores of its stream (the paper's DSPOT), so a slowly rising baseline does not turn into alerts.

With ``floor_at_calibrated`` (default) the adapted threshold never falls below the calibrated one: adaptation only
makes a noisy stream quieter, never a stream more sensitive than the model's calibration.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

ThresholdMode = Literal["fixed", "spot", "dspot"]


@dataclass(frozen=True)
class ThresholdConfig:
    mode: ThresholdMode = "fixed"
    risk: float = 1e-3
    calibration_count: int = 200
    initial_quantile: float = 0.98
    drift_depth: int = 50
    history: int = 5000
    min_excesses: int = 10
    floor_at_calibrated: bool = True


@dataclass
class _StreamState:
    calibration: list[float] = field(default_factory=list)
    initial: float | None = None  # t
    # the last ``history`` normal scores: their excess over t, NaN when not an excess
    recent: deque[float] = field(default_factory=deque)
    excess_count: int = 0
    excess_sum: float = 0.0
    excess_sumsq: float = 0.0
    z: float | None = None
    drift: deque[float] = field(default_factory=deque)


class Thresholder:
    def __init__(self, calibrated: float, config: ThresholdConfig | None = None) -> None:
        self.calibrated = calibrated
        self.config = config or ThresholdConfig()
        self._streams: dict[str, _StreamState] = {}

    def apply(self, stream: str, score: float) -> tuple[float, bool]:
        """Returns (threshold, is_anomaly) for this score of this stream, and learns from it."""
        cfg = self.config
        if cfg.mode == "fixed":
            return self.calibrated, score > self.calibrated
        state = self._streams.setdefault(stream, _StreamState(recent=deque(), drift=deque(maxlen=cfg.drift_depth)))
        baseline = float(np.mean(state.drift)) if cfg.mode == "dspot" and state.drift else 0.0
        value = score - baseline
        if state.initial is None:
            # Calibration: judged by the calibrated threshold; every score is kept (as in the paper) so that the
            # tail fit is not biased by the calibrated threshold it is meant to replace.
            is_anomaly = score > self.calibrated
            state.calibration.append(value)
            self._remember_normal(state, score)
            if len(state.calibration) >= cfg.calibration_count:
                self._initialise(state)
            return self.calibrated, is_anomaly
        assert state.z is not None
        threshold = state.z + baseline
        if cfg.floor_at_calibrated:
            threshold = max(threshold, self.calibrated)
        is_anomaly = score > threshold
        if not is_anomaly:
            self._observe(state, value)
            self._remember_normal(state, score)
        return threshold, is_anomaly

    def threshold(self, stream: str) -> float:
        state = self._streams.get(stream)
        if self.config.mode == "fixed" or state is None or state.z is None:
            return self.calibrated
        baseline = float(np.mean(state.drift)) if self.config.mode == "dspot" and state.drift else 0.0
        adapted = state.z + baseline
        return max(adapted, self.calibrated) if self.config.floor_at_calibrated else adapted

    def _remember_normal(self, state: _StreamState, score: float) -> None:
        if self.config.mode == "dspot":
            state.drift.append(score)

    def _initialise(self, state: _StreamState) -> None:
        values = np.asarray(state.calibration)
        # Low enough a quantile that at least ``min_excesses`` calibration scores lie above it, to fit the tail.
        level = min(self.config.initial_quantile, 1 - self.config.min_excesses / len(values))
        state.initial = float(np.quantile(values, level))
        state.calibration = []
        for value in values:
            self._observe(state, float(value), refit=False)
        self._refit(state)
        if state.z is None:  # (nearly) constant scores have no tail to fit: the initial threshold is the bound
            state.z = state.initial

    def _observe(self, state: _StreamState, value: float, refit: bool = True) -> None:
        assert state.initial is not None
        excess = value - state.initial if value > state.initial else math.nan
        state.recent.append(excess)
        if not math.isnan(excess):
            state.excess_count += 1
            state.excess_sum += excess
            state.excess_sumsq += excess * excess
        if len(state.recent) > self.config.history:
            old = state.recent.popleft()
            if not math.isnan(old):
                state.excess_count -= 1
                state.excess_sum -= old
                state.excess_sumsq -= old * old
        if refit and not math.isnan(excess):
            self._refit(state)

    def _refit(self, state: _StreamState) -> None:
        assert state.initial is not None
        n, count = len(state.recent), state.excess_count
        if count < 2:  # the history window lost its extremes: keep the last fit
            return
        mean = state.excess_sum / count
        var = max(state.excess_sumsq / count - mean * mean, 1e-12)
        gamma = min(max(0.5 * (1 - mean * mean / var), -0.5), 0.5)
        sigma = max(0.5 * mean * (mean * mean / var + 1), 1e-12)
        ratio = self.config.risk * n / count
        if abs(gamma) < 1e-6:
            state.z = state.initial - sigma * math.log(ratio)
        else:
            state.z = state.initial + sigma / gamma * (ratio**-gamma - 1)
