"""The deployable time-series detector: denoiser + schedule + per-stream normalisation + per-mode calibration.

``score`` takes RAW windows [batch, length, channels] (channels in model-card order), one stream id and one mode per
window, and returns the window score, per-step scores and per-channel contributions.

Per-stream calibration (the practice of the SKAB reference notebooks: every series is judged against its own
normal rows): absolute errors are divided per channel by the mean error that channel shows on THIS stream's
held-out normal windows (so a sensor that is noisy even when healthy does not dominate), raised where needed to
the channel's distance from its training level beyond the stream's normal envelope (``guard_levels``, against
the identity shortcut); the window scores as its worst channel (``window_scores``). The stream's threshold is
median + z x MAD of its held-out normal scores (z from one POT tail fit on the pooled robust z-scores of all
streams, ``calibration.stream_thresholds``), raised where the stream's fit windows score higher, and the
served SCORE is mapped so that the median is 0 and the threshold 1.0 for every stream: (score - median) /
(threshold - median). Scores of quiet and loud streams are comparable, and a stream whose normal windows sit
close to its threshold does not outrank another stream's anomaly. Streams never seen in training use the pooled
``default`` calibration (pooled channel scale, POT threshold on the pooled held-out or fit scores, whichever is
higher, the held-out median).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from triton_models.diffusion import NoiseSchedule
from triton_models.model_card import ServedThreshold
from triton_models.names import CHANNEL_SCORES, POOLED_STREAM, RECONSTRUCTION, SCORE, STEP_SCORES, TS_MODES, TsMode
from triton_models.timeseries.calibration import Threshold, served_scale
from triton_models.timeseries.networks import ConvDenoiser, FlagPrior
from triton_models.timeseries.normalization import StreamNormalizer, centre_slow_channels
from triton_models.timeseries.scoring import DiffusionScorer, ScoringConfig

WEIGHTS_FILE = "weights.pt"
DETECTOR_FILE = "detector.json"


@dataclass
class ModelConfig:
    channels: list[str]
    window: int = 32
    stride: int = 1
    hidden: int = 32
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    diffusion_steps: int = 100
    schedule: str = "cosine"
    seed: int = 0
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    slow_channels: list[int] = field(default_factory=list)  # judged by shape, not level (set by training)

    def to_json(self) -> dict:
        data = asdict(self)
        data["dilations"] = list(self.dilations)
        return data

    @classmethod
    def from_json(cls, data: dict) -> ModelConfig:
        data = dict(data)
        data["dilations"] = tuple(data["dilations"])
        data["scoring"] = ScoringConfig(**data["scoring"])
        return cls(**data)


CALIBRATED_THRESHOLD = 1.0  # the served SCORE is 0 at the stream's median, 1 at its threshold: alarm when SCORE > 1


def window_scores(scaled_errors: np.ndarray) -> dict[str, np.ndarray]:
    """SCORE [B], STEP_SCORES [B, L], CHANNEL_SCORES [B, C] from channel-scaled errors [B, L, C].

    A fault usually shows in one or a few sensors: the window scores as its worst channel (mean over the window of
    that channel's scaled error), so a one-sensor fault is not diluted by the healthy channels, the more so the more
    channels a plant has. STEP_SCORES are the worst channel's per-step errors (their mean is SCORE), CHANNEL_SCORES
    every channel's mean."""
    channel = scaled_errors.mean(axis=1)
    worst = channel.argmax(axis=1)
    return {
        SCORE: channel.max(axis=1).astype(np.float32),
        STEP_SCORES: np.take_along_axis(scaled_errors, worst[:, None, None], axis=2)[:, :, 0].astype(np.float32),
        CHANNEL_SCORES: channel.astype(np.float32),
    }


def window_levels(normalised: np.ndarray, slow_channels: list[int]) -> np.ndarray:
    """Each channel's distance from its normal level [B, C]: |mean over the window| of normalised windows [B, L, C],
    in training standard deviations; 0 for slow channels, which are judged by shape only."""
    levels = np.abs(normalised.mean(axis=1))
    levels[:, slow_channels] = 0.0
    return levels.astype(np.float32)


def window_spreads(normalised: np.ndarray) -> np.ndarray:
    """Each channel's standard deviation over the window [B, C] of normalised windows [B, L, C]."""
    return normalised.std(axis=1).astype(np.float32)


# A channel is held (a stuck sensor) when its spread over the window is below this fraction of the smallest spread
# the stream's held-out normal windows showed on it (``spread_limits``).
HELD_SPREAD_FRACTION = 0.5


def spread_limits(spreads: np.ndarray, risk: float, unscored: list[int]) -> list[float]:
    """Per channel, the spread [B, C] (``window_spreads``) of the stream's held-out normal windows below which the
    channel counts as held: ``HELD_SPREAD_FRACTION`` x its (risk / scored channels) quantile, so that at most about
    ``risk`` of normal windows have any channel below its limit; 0 (never held) for unscored channels, and 0 or
    close to it for a channel that sat still in normal windows (a quantised or slow sensor, a flag)."""
    if not len(spreads):
        return [0.0] * spreads.shape[1]
    scored = max(spreads.shape[1] - len(unscored), 1)
    limits = HELD_SPREAD_FRACTION * np.quantile(spreads, risk / scored, axis=0)
    limits[unscored] = 0.0
    return limits.astype(float).tolist()


def guard_spreads(served: np.ndarray, spreads: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """Served channel errors [B, L, C] (1.0 = the stream's threshold) raised, where a channel is held (its spread
    [B, C] below its limit), so that the channel's mean over the window is at least 1 + (1 - spread / limit): a
    sensor held flatter than any normal window of the stream alarms, the more surely the flatter.

    Reconstruction cannot see it by itself: a held reading is the smoothest curve there is, and the model
    reconstructs it better than the noisy normal signal (the ``commands`` plant of benchmarks/ts_suite.py: its stuck
    rows scored below its clean normal rows, AUROC 0.16)."""
    held = spreads < limits
    deficit = np.where(held, 1.0 - spreads / np.where(held, limits, 1.0), 0.0)
    return raise_channel_means(served, np.where(held, CALIBRATED_THRESHOLD + deficit, -np.inf))


def raise_channel_means(errors: np.ndarray, floors: np.ndarray) -> np.ndarray:
    """Errors [B, L, C] raised by one amount per window and channel, where needed, so that each channel's mean over
    the window is at least its floor [B, C]; the per-step shape of the errors is kept (the guards' one mechanism)."""
    shortfall = np.maximum(floors - errors.mean(axis=1), 0.0)
    return errors + shortfall[:, None, :].astype(errors.dtype)


def guard_levels(scaled_errors: np.ndarray, levels: np.ndarray, envelope: float) -> np.ndarray:
    """Channel-scaled errors [B, L, C] raised, where needed, so that each channel's mean over the window is at least
    the part of its level [B, C] (``window_levels``) beyond the stream's ``envelope``; the per-step shape of the
    errors is kept.

    The identity shortcut (Liu et al. 2025) in its most common form: a masked block is imputed from the rest of the
    window, and a noised window is denoised from what the noise left, so a shift that spans the whole window is in
    the model's input too and comes back in its output; only the window's edges show it. Its level is what no mask
    hides: a channel is at least as anomalous as it is far, in standard deviations, beyond the farthest level the
    stream's held-out normal windows reached (``level_envelope``). Counting the whole level instead (no envelope)
    alarmed on normal operation whenever a plant's channels met at levels the short training run had not shown
    together: on the 60-sensor synthetic plant, 24 % of clean normal windows (benchmarks/ts_suite.py)."""
    return raise_channel_means(scaled_errors, levels - envelope)


def level_envelope(levels: np.ndarray, risk: float, unscored: list[int]) -> float:
    """How far from its training level a normal window of the stream goes: the (1 - ``risk``) quantile, over
    held-out normal windows, of the window's largest level [B, C] (``window_levels``) among the scored channels. An
    unscored flag's firing is no measure of the scored channels' normal range."""
    scored = np.delete(levels, unscored, axis=1)
    return float(np.quantile(scored.max(axis=1), 1 - risk)) if scored.size else 0.0


# A flag is scored when the model's error on it is at most this fraction of its median's: it follows the plant. The
# flag prior (``networks.FlagPrior``) predicts a rarely firing flag at its median whatever the plant does, and an
# error a hair below the median's kept a command flag with a tiny scale in the score, whose firings then set the
# stream's threshold ten times above its median (``commands``: no alarm at all).
FLAG_PREDICTED_FRACTION = 0.5


def unpredictable_flags(errors: np.ndarray, windows: np.ndarray, flags: np.ndarray) -> list[int]:
    """Flags (``flags`` [C] bool: at most two values in the stream's training rows) that the model predicts no
    better than their training median on the stream's held-out windows [B, L, C] (absolute errors ``errors``,
    normalised ``windows``: the median is 0): a command flag fires on its own, so its firing is normal operation and
    the model's error on it says nothing about the plant. Such flags stay in the model's input and out of the
    score; a flag that follows the plant (a pump's on/off) is predicted, and its flip against the plant is scored.
    Scoring every flag, a firing command flag was the worst channel of its windows and the analog sensor's faults
    drowned (the ``commands`` plant of benchmarks/ts_suite.py)."""
    model = errors[:, -1, :].mean(axis=0)  # the last row of each held-out window: every held-out row once
    median = np.abs(windows[:, -1, :]).mean(axis=0)
    return [int(c) for c in np.flatnonzero(flags & (model > FLAG_PREDICTED_FRACTION * median))]


def guarded_errors(
    errors: np.ndarray, scale: np.ndarray, levels: np.ndarray, envelope: float, unscored: list[int]
) -> np.ndarray:
    """Absolute errors [B, L, C] of one stream divided by its channel ``scale``, raised by the level guard
    (``guard_levels``), its ``unscored`` channels counted as predicted exactly: the stream's raw scores are those of
    ``window_scores`` on it, in calibration and in serving alike."""
    guarded = guard_levels(errors / scale, levels, envelope)
    guarded[:, :, unscored] = 0.0
    return guarded


@dataclass
class StreamCalibration:
    channel_scale: list[float]  # mean absolute error per channel on the stream's held-out normal windows
    location: float  # median raw score (worst channel's mean scaled error) of the stream's held-out normal windows
    threshold: float  # raw score above which the stream alarms
    level_envelope: float  # levels up to this many sd are normal for the stream (``guard_levels``)
    unscored_channels: list[int]  # flags the model could not predict (``unpredictable_flags``): input only
    spread_limits: list[float]  # per channel: a spread below it is a held sensor (``guard_spreads``)

    def serve(self, errors: np.ndarray, levels: np.ndarray, spreads: np.ndarray) -> np.ndarray:
        """Absolute errors [B, L, C], window levels and spreads [B, C] -> the input of ``window_scores``, whose SCORE
        is then 0 at the stream's median and 1.0 at its threshold (an increasing affine map commutes with the mean
        over steps and the max over channels); unscored channels count as predicted exactly, held ones alarm."""
        scale = np.asarray(self.channel_scale, dtype=np.float32)
        guarded = guarded_errors(errors, scale, levels, self.level_envelope, self.unscored_channels)
        served = served_scale(guarded, self.location, self.threshold).astype(np.float32)
        return guard_spreads(served, spreads, np.asarray(self.spread_limits, dtype=np.float32))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ModeCalibration:
    """Per-stream calibration of one mode; ``streams`` always holds the pooled ``default`` entry."""

    streams: dict[str, StreamCalibration]
    default_threshold: Threshold  # POT fit on the pooled held-out scores: the ``default`` stream's threshold
    tail: Threshold | None  # POT fit on the pooled robust z-scores (value = z); None if no stream had enough windows

    def stream(self, name: str) -> StreamCalibration:
        return self.streams.get(name, self.streams[POOLED_STREAM])

    def served_threshold(self) -> ServedThreshold:
        """The threshold on the served SCORE (model card ``modes.<mode>.threshold``) and how it came about."""
        return ServedThreshold(
            value=CALIBRATED_THRESHOLD,
            method="per_stream",
            rule="SCORE = (score - stream median) / (stream threshold - stream median); stream threshold = median "
            "+ z x MAD of the stream's held-out normal scores, z = POT on the pooled robust z-scores, raised to the "
            "same rule on its fit windows' scores where higher; unknown streams: the higher POT on the pooled held-out "
            "or fit scores",
            details={
                "streams": len(self.streams) - 1,
                "z": self.tail.to_json() if self.tail else None,
                "default_stream": self.default_threshold.to_json(),
            },
        )

    def to_json(self) -> dict:
        return {
            "streams": {name: c.to_json() for name, c in self.streams.items()},
            "default_threshold": self.default_threshold.to_json(),
            "tail": self.tail.to_json() if self.tail else None,
        }

    @classmethod
    def from_json(cls, data: dict) -> ModeCalibration:
        return cls(
            streams={name: StreamCalibration(**c) for name, c in data["streams"].items()},
            default_threshold=Threshold(**data["default_threshold"]),
            tail=Threshold(**data["tail"]) if data.get("tail") else None,
        )


class TimeSeriesDetector:
    def __init__(
        self,
        config: ModelConfig,
        network: ConvDenoiser,
        normalizer: StreamNormalizer,
        calibration: dict[str, ModeCalibration] | None = None,
        default_mode: TsMode = RECONSTRUCTION,
    ):
        self.config = config
        self.network = network
        self.normalizer = normalizer
        self.calibration = calibration or {}
        self.default_mode = default_mode
        self.schedule = NoiseSchedule(config.diffusion_steps, config.schedule)
        self.scorer = DiffusionScorer(network, self.schedule, config.scoring, config.window, config.seed)
        self.device = torch.device("cpu")

    @staticmethod
    def build_network(config: ModelConfig) -> ConvDenoiser:
        alpha_bars = NoiseSchedule(config.diffusion_steps, config.schedule).alpha_bars
        prior = FlagPrior(len(config.channels), alpha_bars)
        return ConvDenoiser(len(config.channels), prior, config.hidden, config.dilations)

    def to(self, device: torch.device | str) -> TimeSeriesDetector:
        self.device = torch.device(device)
        self.scorer.to(self.device)
        return self

    def normalise_windows(self, windows: np.ndarray, streams: list[str]) -> np.ndarray:
        out = np.empty(windows.shape, dtype=np.float32)
        for stream in set(streams):
            rows = [i for i, s in enumerate(streams) if s == stream]
            out[rows] = self.normalizer.normalise(windows[rows], stream)
        return out

    def absolute_errors(self, normalised: np.ndarray, mode: str) -> np.ndarray:
        """Absolute error per entry [batch, length, channels]. Absolute rather than squared errors (as in the SKAB
        reference residuals): one wild entry cannot outweigh a consistent deviation across the window."""
        centred = centre_slow_channels(normalised, self.config.slow_channels)
        windows = torch.from_numpy(np.ascontiguousarray(centred, dtype=np.float32)).to(self.device)
        return self.scorer.squared_errors(windows, mode).sqrt().cpu().numpy()

    def scaled_errors(
        self, errors: np.ndarray, levels: np.ndarray, spreads: np.ndarray, stream: str, mode: str
    ) -> np.ndarray:
        """Absolute errors of one stream's windows, their levels (``window_levels``) and spreads
        (``window_spreads``) on the stream's calibrated scale, the input of ``window_scores`` (SCORE 0 = the stream's
        median normal window, 1.0 = its threshold)."""
        return self.calibration[mode].stream(stream).serve(errors, levels, spreads)

    def score(self, windows: np.ndarray, streams: list[str], modes: list[str]) -> dict[str, np.ndarray]:
        """Scores for raw windows; returns SCORE [B], STEP_SCORES [B, L], CHANNEL_SCORES [B, C] as float32."""
        _batch, length, channels = windows.shape
        if length != self.config.window or channels != len(self.config.channels):
            raise ValueError(f"windows must be [batch, {self.config.window}, {len(self.config.channels)}]")
        normalised = self.normalise_windows(windows, streams)
        levels = window_levels(normalised, self.config.slow_channels)
        spreads = window_spreads(normalised)
        errors = np.zeros(windows.shape, dtype=np.float32)
        for mode in set(modes):
            if mode not in TS_MODES:
                raise ValueError(f"unknown mode {mode!r} ({' | '.join(TS_MODES)})")
            rows = [i for i, m in enumerate(modes) if m == mode]
            errors[rows] = self.absolute_errors(normalised[rows], mode)
            for stream in {streams[i] for i in rows}:
                selected = [i for i in rows if streams[i] == stream]
                errors[selected] = self.scaled_errors(
                    errors[selected], levels[selected], spreads[selected], stream, mode
                )
        return window_scores(errors)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.network.state_dict(), directory / WEIGHTS_FILE)
        state = {
            "config": self.config.to_json(),
            "normalization": self.normalizer.to_json(),
            "calibration": {mode: c.to_json() for mode, c in self.calibration.items()},
            "default_mode": self.default_mode,
        }
        (directory / DETECTOR_FILE).write_text(json.dumps(state, indent=1))

    @classmethod
    def load(cls, directory: Path, device: str | None = None) -> TimeSeriesDetector:
        """Raises ``ValueError`` for a detector saved by a version whose configuration or calibration differs."""
        state = json.loads((Path(directory) / DETECTOR_FILE).read_text())
        try:
            config = ModelConfig.from_json(state["config"])
            calibration = {mode: ModeCalibration.from_json(c) for mode, c in state["calibration"].items()}
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"{Path(directory) / DETECTOR_FILE} was written by another version of the detector ({error}): "
                "retrain the model"
            ) from error
        network = cls.build_network(config)
        weights = torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(weights)
        except RuntimeError as error:  # missing, unexpected or reshaped weights
            raise ValueError(
                f"{Path(directory) / WEIGHTS_FILE} does not fit this version's network: retrain the model"
            ) from error
        detector = cls(config, network, StreamNormalizer.from_json(state["normalization"]), calibration)
        detector.default_mode = state["default_mode"]
        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return detector.to(chosen)
