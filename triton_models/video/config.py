"""Settings of the video frame diffusion model, saved next to its weights so Triton rebuilds the same model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from triton_models.names import FORECAST, FRAME_DIFFERENCE, OPTICAL_FLOW, VideoMotion, VideoScoring


@dataclass(frozen=True)
class VideoModelConfig:
    height: int = 96
    width: int = 144  # 360x240 Ped2 frames keep their 3:2 aspect ratio
    context: int = 4  # K past frames condition the prediction of the current one
    base_channels: int = 32
    timesteps: int = 1000
    ddim_steps: int = 4
    patch: int = 12  # anomaly map: mean squared error over patch x patch pixels (1/12 of the width) ...
    patch_stride: int = 6  # ... every patch_stride pixels; the score is the map's maximum
    noise_seed: int = 1234
    # Scoring setting, chosen label-free at training (triton_models.video.selection):
    scoring: VideoScoring = FORECAST  # forecast: DDIM from pure noise; reconstruct: from the noised current frame
    noise_level: float = 0.5  # reconstruct: the current frame is noised to this fraction of T
    copy_ratio_floor: float = 0.0  # > 0: map = model error / (copy-last-frame error + floor), per patch
    motion_weight: float = 0.0  # > 0: map = model error^(1-w) x motion^w, per patch ...
    motion: VideoMotion = FRAME_DIFFERENCE  # ... motion: copy-last-frame error, or optical flow magnitude (pixels)

    @property
    def map_shape(self) -> tuple[int, int]:
        return (
            (self.height - self.patch) // self.patch_stride + 1,
            (self.width - self.patch) // self.patch_stride + 1,
        )

    @property
    def blends_flow(self) -> bool:
        """Whether the anomaly map needs the optical flow (triton_models.video.motion)."""
        return self.motion_weight > 0 and self.motion == OPTICAL_FLOW

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_file(cls, path: Path) -> VideoModelConfig:
        return cls(**json.loads(path.read_text()))
