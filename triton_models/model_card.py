"""The model card, ``<model_repository>/<model>/model_card.json``: what a served model tells the stream pipeline
(and a person) about itself. One typed, versioned schema for both model families, written by their repository
writers (``triton_models.timeseries.repository``, ``triton_models.video.repository``) and read by
``operators.model_cards``.

A card of another ``schema_version`` is refused rather than guessed at: retrain (or re-export) the model. Bump
``SCHEMA_VERSION`` with every change that a reader of the previous layout would misread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from triton_models.names import POOLED_STREAM, TsMode

SCHEMA_VERSION = 1
CARD_FILE = "model_card.json"

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(strict=True, gt=0)]


class ModelCardSchemaError(ValueError):
    """The text is not a model card of this schema version."""


class _Record(BaseModel):
    # Unknown keys are errors: writer and reader share this schema, so an unknown key is a typo or another version.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServedThreshold(_Record):
    """The alarm level on the served SCORE (alarm when SCORE > value) and how it was set, label-free."""

    value: FiniteFloat
    method: str
    rule: str
    details: dict[str, Any] = Field(default_factory=dict)


class TensorSpec(_Record):
    dtype: str  # Triton's wire type: FP32, BYTES, UINT8
    dims: list[int]  # -1: the batch


class TritonIo(_Record):
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    score_semantics: str


class Training(_Record):
    """How the model came about: training settings, wall time, final loss, and what data it saw."""

    settings: dict[str, Any]
    seconds: FiniteFloat
    final_loss: FiniteFloat
    data: dict[str, Any]  # source and size of the training and calibration data (family specific)


class _ModelCard(_Record):
    schema_version: int = SCHEMA_VERSION
    model: str  # the Triton model name
    description: str
    version: str = ""  # shown with every score; "" = Triton's latest
    io: TritonIo
    training: Training
    config: dict[str, Any]  # the model's own settings, as saved next to its weights

    @classmethod
    def from_json(cls, text: str) -> Self:
        """Parse and validate; a :class:`ModelCardSchemaError` names what is wrong."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelCardSchemaError(f"not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ModelCardSchemaError("a model card is a JSON object")
        # The version first: a card of another version fails most other checks too, for this one reason.
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            known = f"this reader knows schema {SCHEMA_VERSION}: retrain the model"
            if version is None:
                raise ModelCardSchemaError(f"no schema_version (written before cards were versioned); {known}")
            raise ModelCardSchemaError(f"unknown schema_version {version!r}; {known}")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in error.errors(include_url=False)
            )
            raise ModelCardSchemaError(problems) from error

    def write(self, model_dir: Path) -> Path:
        path = Path(model_dir) / CARD_FILE
        # default=float: the free-form records (training data, evaluation) may hold numpy scalars.
        path.write_text(json.dumps(self.model_dump(), indent=1, default=float) + "\n")
        return path


class TsModeRecord(_Record):
    threshold: ServedThreshold
    channel_error_scale: list[float]  # the pooled stream's mean absolute error per channel (held-out windows)
    held_out_score_quantiles: dict[str, float]  # served scores of the held-out normal windows


class TsCard(_ModelCard):
    """``ts_diffusion``: windows of ``window`` rows every ``stride`` rows, channels in ``WINDOW``'s order."""

    window: PositiveInt
    stride: PositiveInt
    channels: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    slow_channels: list[str]  # judged by their shape within a window, not their level
    default_mode: TsMode
    modes: dict[TsMode, TsModeRecord] = Field(min_length=1)
    sample_period_s: Annotated[FiniteFloat, Field(gt=0)] = 1.0  # expected seconds between readings
    streams: list[str]  # asset ids seen in training: the default asset registry
    evaluation: dict[str, Any] | None = None  # benchmark metrics, when trained by ``evaluate ts --model-out``

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.stride > self.window:
            raise ValueError(f"stride {self.stride} exceeds window {self.window}")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels has duplicates")
        if not set(self.slow_channels) <= set(self.channels):
            raise ValueError("slow_channels must be channels")
        if self.default_mode not in self.modes:
            raise ValueError(f"default_mode {self.default_mode!r} has no calibrated mode")
        if POOLED_STREAM in self.streams:
            raise ValueError(f"streams lists the pooled fallback {POOLED_STREAM!r}, which is not an asset")
        return self


class VideoCard(_ModelCard):
    """``video_diffusion``: scores the last of ``context + 1`` frames of ``height`` x ``width``."""

    context: PositiveInt  # K past frames before the scored one
    height: PositiveInt
    width: PositiveInt
    map_shape: tuple[PositiveInt, PositiveInt]
    threshold: ServedThreshold
    parameters: int
    weights_bytes: int
    scoring_selection: dict[str, Any]  # the label-free choice of the scoring setting and its candidates
