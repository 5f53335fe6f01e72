"""Model cards: what the streaming operators need to know about a served model.

Each Triton model directory holds ``model_card.json`` (``<model_repository>/<model>/model_card.json``), written by
the model's repository writer in the one versioned layout of :mod:`triton_models.model_card` (``TsCard``,
``VideoCard``). This module reads it into the few values the pipeline uses; a missing card, a card of another
``schema_version`` or one that breaks the schema is a :class:`ModelCardError` that says why.

- time series (``ts_diffusion``): ``window``, ``stride``, ``channels`` (the order of the ``WINDOW`` input's last
  axis), one threshold per mode (``modes.<mode>.threshold.value``), ``default_mode``, ``sample_period_s``,
  ``streams`` (asset ids seen in training: the default asset registry), ``version`` (shown with every score).
- video (``video_diffusion``): ``context`` (K frames before the scored one), ``height``, ``width``,
  ``threshold.value``, ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from triton_models.model_card import CARD_FILE, ModelCardSchemaError, TsCard, VideoCard
from triton_models.names import POOLED_STREAM, TsMode

__all__ = [
    "POOLED_STREAM",
    "ModelCardError",
    "TsModelCard",
    "VideoModelCard",
    "card_path",
    "load_ts_card",
    "load_video_card",
]


class ModelCardError(ValueError):
    """The model card is missing or does not hold what the pipeline needs."""


@dataclass(frozen=True)
class TsModelCard:
    window: int
    stride: int
    channels: tuple[str, ...]
    thresholds: dict[TsMode, float]
    default_mode: TsMode
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


Card = TypeVar("Card", TsCard, VideoCard)


def _read(schema: type[Card], path: Path) -> Card:
    try:
        return schema.from_json(path.read_text())
    except FileNotFoundError as error:
        raise ModelCardError(f"no model card at {path}") from error
    except ModelCardSchemaError as error:
        raise ModelCardError(f"model card {path}: {error}") from error


def load_ts_card(path: Path) -> TsModelCard:
    card = _read(TsCard, path)
    return TsModelCard(
        window=card.window,
        stride=card.stride,
        channels=tuple(card.channels),
        thresholds={mode: record.threshold.value for mode, record in card.modes.items()},
        default_mode=card.default_mode,
        sample_period_s=card.sample_period_s,
        streams=tuple(card.streams),
        version=card.version,
    )


def load_video_card(path: Path) -> VideoModelCard:
    card = _read(VideoCard, path)
    return VideoModelCard(card.context, card.height, card.width, card.threshold.value, card.version)


def card_path(model_repository: Path, model: str) -> Path:
    return model_repository / model / CARD_FILE
