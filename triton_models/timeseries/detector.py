"""The deployable time-series detector: denoiser + schedule + per-stream normalisation + per-mode calibration.

``score`` takes RAW windows [batch, length, channels] (channels in model-card order), one stream id and one mode per
window, and returns the window score, per-step scores and per-channel contributions. Errors are divided per
channel by the mean error that channel shows on held-out normal data, so a channel that is hard to predict even
when healthy does not dominate the score.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from triton_models.diffusion import NoiseSchedule
from triton_models.timeseries.calibration import Threshold
from triton_models.timeseries.networks import ConvDenoiser
from triton_models.timeseries.normalization import StreamNormalizer
from triton_models.timeseries.scoring import MODES, DiffusionScorer, ScoringConfig

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


@dataclass
class ModeCalibration:
    channel_scale: list[float]  # mean squared error per channel on held-out normal windows
    threshold: Threshold

    def to_json(self) -> dict:
        return {"channel_scale": self.channel_scale, "threshold": self.threshold.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> ModeCalibration:
        return cls(channel_scale=list(data["channel_scale"]), threshold=Threshold(**data["threshold"]))


class TimeSeriesDetector:
    def __init__(
        self,
        config: ModelConfig,
        network: ConvDenoiser,
        normalizer: StreamNormalizer,
        calibration: dict[str, ModeCalibration] | None = None,
        default_mode: str = "imputation",
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
        return ConvDenoiser(len(config.channels), config.hidden, config.dilations)

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

    def squared_errors(self, normalised: np.ndarray, mode: str) -> np.ndarray:
        windows = torch.from_numpy(np.ascontiguousarray(normalised, dtype=np.float32)).to(self.device)
        return self.scorer.squared_errors(windows, mode).cpu().numpy()

    def score(self, windows: np.ndarray, streams: list[str], modes: list[str]) -> dict[str, np.ndarray]:
        """Scores for raw windows; returns SCORE [B], STEP_SCORES [B, L], CHANNEL_SCORES [B, C] as float32."""
        _batch, length, channels = windows.shape
        if length != self.config.window or channels != len(self.config.channels):
            raise ValueError(f"windows must be [batch, {self.config.window}, {len(self.config.channels)}]")
        normalised = self.normalise_windows(windows, streams)
        errors = np.zeros(windows.shape, dtype=np.float32)
        for mode in set(modes):
            if mode not in MODES:
                raise ValueError(f"unknown mode {mode!r} ({' | '.join(MODES)})")
            rows = [i for i, m in enumerate(modes) if m == mode]
            scale = self.channel_scale(mode)
            errors[rows] = self.squared_errors(normalised[rows], mode) / scale
        return {
            "SCORE": errors.mean(axis=(1, 2)).astype(np.float32),
            "STEP_SCORES": errors.mean(axis=2).astype(np.float32),
            "CHANNEL_SCORES": errors.mean(axis=1).astype(np.float32),
        }

    def channel_scale(self, mode: str) -> np.ndarray:
        if mode in self.calibration:
            return np.asarray(self.calibration[mode].channel_scale, dtype=np.float32)
        return np.ones(len(self.config.channels), dtype=np.float32)

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
        state = json.loads((Path(directory) / DETECTOR_FILE).read_text())
        config = ModelConfig.from_json(state["config"])
        network = cls.build_network(config)
        network.load_state_dict(torch.load(Path(directory) / WEIGHTS_FILE, map_location="cpu", weights_only=True))
        calibration = {mode: ModeCalibration.from_json(c) for mode, c in state["calibration"].items()}
        detector = cls(config, network, StreamNormalizer.from_json(state["normalization"]), calibration)
        detector.default_mode = state["default_mode"]
        chosen = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return detector.to(chosen)
