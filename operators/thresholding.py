"""Score -> anomaly decision, with the model's calibrated threshold, optionally adapted online per stream.

Adaptations (``stream.threshold.adaptation``, :class:`core.settings.ThresholdSettings`):

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

import numpy as np

from core.settings import ThresholdSettings
from triton_models.timeseries.calibration import pot_threshold


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


@dataclass(frozen=True)
class Decision:
    threshold: float
    is_anomaly: bool
    learning: bool = False  # the stream is in its learning period: written, never alerted on


class Thresholder:
    """Per-stream anomaly decisions. A stream the model has no statistics of (not in ``known_streams``, when the
    model knows any) starts with a learning period: its first ``learning_scores`` scores are written but never alarm,
    then its own threshold is the POT threshold (``risk``) of those scores. Without it, an asset the model normalises
    with the pooled fallback would alarm on every window (its level is not the pooled one)."""

    def __init__(
        self,
        calibrated: float,
        config: ThresholdSettings | None = None,
        known_streams: tuple[str, ...] = (),
        learning_scores: int = 0,
    ) -> None:
        self.calibrated = calibrated
        self.config = config or ThresholdSettings()
        self.known_streams = frozenset(known_streams)
        self.learning_scores = learning_scores
        self._learning: dict[str, list[float]] = {}
        self._own: dict[str, float] = {}  # thresholds learnt by streams the model did not know
        self._streams: dict[str, _StreamState] = {}

    def _calibrated(self, stream: str) -> float:
        return self._own.get(stream, self.calibrated)

    def _learns(self, stream: str, score: float) -> bool:
        if not self.known_streams or not self.learning_scores or stream in self.known_streams or stream in self._own:
            return False
        scores = self._learning.setdefault(stream, [])
        scores.append(score)
        if len(scores) >= self.learning_scores:
            self._own[stream] = pot_threshold(np.asarray(scores), self.config.risk).value
            del self._learning[stream]
        return True

    def apply(self, stream: str, score: float) -> Decision:
        """The decision on this score of this stream; the stream's state learns from it."""
        if self._learns(stream, score):
            return Decision(self.calibrated, False, learning=True)
        calibrated = self._calibrated(stream)
        cfg = self.config
        if cfg.adaptation == "fixed":
            return Decision(calibrated, score > calibrated)
        state = self._streams.setdefault(stream, _StreamState(recent=deque(), drift=deque(maxlen=cfg.drift_depth)))
        baseline = float(np.mean(state.drift)) if cfg.adaptation == "dspot" and state.drift else 0.0
        value = score - baseline
        if state.initial is None:
            # Calibration: judged by the calibrated threshold; every score is kept (as in the paper) so that the
            # tail fit is not biased by the calibrated threshold it is meant to replace.
            is_anomaly = score > calibrated
            state.calibration.append(value)
            self._remember_normal(state, score)
            if len(state.calibration) >= cfg.calibration_count:
                self._initialise(state)
            return Decision(calibrated, is_anomaly)
        assert state.z is not None
        threshold = state.z + baseline
        if cfg.floor_at_calibrated:
            threshold = max(threshold, calibrated)
        is_anomaly = score > threshold
        if not is_anomaly:
            self._observe(state, value)
            self._remember_normal(state, score)
        return Decision(threshold, is_anomaly)

    def threshold(self, stream: str) -> float:
        """The stream's current threshold (without judging a score)."""
        state = self._streams.get(stream)
        calibrated = self._calibrated(stream)
        if self.config.adaptation == "fixed" or state is None or state.z is None:
            return calibrated
        baseline = float(np.mean(state.drift)) if self.config.adaptation == "dspot" and state.drift else 0.0
        adapted = state.z + baseline
        return max(adapted, calibrated) if self.config.floor_at_calibrated else adapted

    def _remember_normal(self, state: _StreamState, score: float) -> None:
        if self.config.adaptation == "dspot":
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
