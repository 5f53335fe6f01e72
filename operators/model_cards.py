"""Model cards: what the streaming operators need to know about a served model, read defensively.

Each Triton model directory may hold ``model_card.json`` (``<model_repository>/<model>/model_card.json``).
Expected keys (anything else is ignored; a missing or malformed required key is a :class:`ModelCardError`):

- time series (``ts_diffusion``): ``window`` (int L > 0), ``stride`` (int, 0 < stride <= L), ``channels`` (list of
  channel names in the order of the ``WINDOW`` input's last axis), the thresholds per mode as ``thresholds``
  (mode -> number), or ``modes`` (mode -> ``{"threshold": number or {"value": number, ...}}``), or one number
  ``threshold`` for every mode; ``default_mode`` (``imputation`` or ``reconstruction``; default:
  ``reconstruction`` if it has a threshold, else the first mode). Optional: ``sample_period_s`` (expected seconds
  between readings, default 1.0), ``streams`` (asset ids seen in training, the default asset registry; the pooled
  fallback ``default`` is not an asset), ``version`` (string shown with every score).
- video (``video_diffusion``): ``context`` or ``context_frames`` (int K > 0: frames of context before the scored
  frame), ``height`` and ``width`` (top level or under ``resolution``: the frame size the model takes),
  ``threshold`` (number or ``{"value": number}``). Optional: ``version``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TS_MODES = ("imputation", "reconstruction")
POOLED_STREAM = "default"  # a model's pooled fallback for streams it has not seen: not an asset id


class ModelCardError(ValueError):
    """The model card is missing or does not hold what the pipeline needs."""


@dataclass(frozen=True)
class TsModelCard:
    window: int
    stride: int
    channels: tuple[str, ...]
    thresholds: dict[str, float]
    default_mode: str
    sample_period_s: float = 1.0
    streams: tuple[str, ...] = ()
    version: str = ""

    def threshold(self, mode: str) -> float:
        if mode not in self.thresholds:
            raise ModelCardError(f"model card has no threshold for mode {mode!r} (has {sorted(self.thresholds)})")
        return self.thresholds[mode]


@dataclass(frozen=True)
class VideoModelCard:
    context: int
    height: int
    width: int
    threshold: float
    version: str = ""


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ModelCardError(f"no model card at {path}") from error
    except json.JSONDecodeError as error:
        raise ModelCardError(f"model card {path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ModelCardError(f"model card {path} must hold a JSON object")
    return data


def _positive_int(data: dict[str, Any], key: str, path: Path) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelCardError(f"model card {path}: {key!r} must be a positive integer, got {value!r}")
    return value


def _finite_float(value: Any, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ModelCardError(f"model card {path}: {what} must be a finite number, got {value!r}")
    return float(value)


def load_ts_card(path: Path) -> TsModelCard:
    data = _load(path)
    window = _positive_int(data, "window", path)
    stride = _positive_int(data, "stride", path)
    if stride > window:
        raise ModelCardError(f"model card {path}: stride {stride} exceeds window {window}")
    channels = data.get("channels")
    if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
        raise ModelCardError(f"model card {path}: 'channels' must be a non-empty list of names, got {channels!r}")
    if len(set(channels)) != len(channels):
        raise ModelCardError(f"model card {path}: 'channels' has duplicates")
    raw_thresholds = data.get("thresholds")
    if raw_thresholds is None and "threshold" in data:
        raw_thresholds = dict.fromkeys(TS_MODES, data["threshold"])
    if raw_thresholds is None and isinstance(data.get("modes"), dict):
        raw_thresholds = {
            mode: _threshold_value(entry.get("threshold") if isinstance(entry, dict) else None)
            for mode, entry in data["modes"].items()
        }
    if not isinstance(raw_thresholds, dict) or not raw_thresholds:
        raise ModelCardError(f"model card {path}: 'thresholds' must map modes {TS_MODES} to numbers")
    thresholds = {}
    for mode, value in raw_thresholds.items():
        if mode not in TS_MODES:
            raise ModelCardError(f"model card {path}: unknown mode {mode!r} in 'thresholds'")
        thresholds[mode] = _finite_float(value, f"thresholds[{mode!r}]", path)
    fallback_mode = "reconstruction" if "reconstruction" in thresholds else next(iter(thresholds))
    default_mode = data.get("default_mode", fallback_mode)
    if default_mode not in thresholds:
        raise ModelCardError(f"model card {path}: default_mode {default_mode!r} has no threshold")
    period = _finite_float(data.get("sample_period_s", 1.0), "'sample_period_s'", path)
    if period <= 0:
        raise ModelCardError(f"model card {path}: 'sample_period_s' must be positive")
    streams = data.get("streams", [])
    if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
        raise ModelCardError(f"model card {path}: 'streams' must be a list of asset ids")
    streams = [s for s in streams if s != POOLED_STREAM]
    return TsModelCard(
        window=window,
        stride=stride,
        channels=tuple(channels),
        thresholds=thresholds,
        default_mode=default_mode,
        sample_period_s=period,
        streams=tuple(streams),
        version=str(data.get("version", "")),
    )


def load_video_card(path: Path) -> VideoModelCard:
    data = _load(path)
    size = data.get("resolution") if isinstance(data.get("resolution"), dict) else data
    return VideoModelCard(
        context=_positive_int(data, "context" if "context" in data else "context_frames", path),
        height=_positive_int(size, "height", path),
        width=_positive_int(size, "width", path),
        threshold=_finite_float(_threshold_value(data.get("threshold")), "'threshold'", path),
        version=str(data.get("version", "")),
    )


def _threshold_value(entry: Any) -> Any:
    """A threshold is a number, or an object holding it as ``value`` (a calibration record)."""
    return entry.get("value") if isinstance(entry, dict) else entry


def card_path(model_repository: Path, model: str) -> Path:
    return model_repository / model / "model_card.json"
