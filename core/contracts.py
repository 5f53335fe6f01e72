"""Typed, versioned message contracts between stages.

Wire format:
- sensor readings, sensor windows, scores, alerts and dead letters are UTF-8 JSON objects, each carrying
  ``schema`` (its type) and ``version``; keys are the asset or camera id.
- video frames carry the image bytes (JPEG, or raw uint8 row-major) as the Kafka value and their metadata
  as a JSON header ``diffsentry-frame``, so that a frame is never base64-inflated.

``decode(model, raw)`` raises :class:`ContractError` whose message says what was wrong.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FRAME_HEADER = "diffsentry-frame"

Modality = Literal["sensor", "video"]
Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}


class ContractError(ValueError):
    """A message does not satisfy its contract; ``str(error)`` is the reason sent to the dead-letter topic."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_name: ClassVar[str]
    version: int = 1

    def to_json(self) -> bytes:
        payload = self.model_dump(mode="json")
        payload["schema"] = self.schema_name
        return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def _finite(values: list[float], what: str) -> list[float]:
    for index, value in enumerate(values):
        if not math.isfinite(value):
            raise ValueError(f"{what}[{index}] is {value}, not a finite number")
    return values


class SensorReading(Message):
    """One sample of every channel of an asset at one event time (seconds since the epoch)."""

    schema_name: ClassVar[str] = "sensor_reading"
    asset: str = Field(min_length=1, max_length=200)
    ts: float
    values: dict[str, float] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _values_finite(cls, values: dict[str, float]) -> dict[str, float]:
        for channel, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"channel {channel!r} is {value}, not a finite number")
        return values


class SensorWindow(Message):
    """A window of readings of one asset, ``values[step][channel]``; ``observed`` marks real samples."""

    schema_name: ClassVar[str] = "sensor_window"
    asset: str
    start_ts: float
    end_ts: float
    channels: list[str]
    values: list[list[float]]
    observed: list[list[bool]]

    @model_validator(mode="after")
    def _shape(self) -> SensorWindow:
        width = len(self.channels)
        if len(self.values) != len(self.observed):
            raise ValueError("values and observed differ in length")
        for step, (row, mask) in enumerate(zip(self.values, self.observed, strict=True)):
            if len(row) != width or len(mask) != width:
                raise ValueError(f"step {step} has {len(row)} values for {width} channels")
            _finite(row, f"values[{step}]")
        return self


class VideoFrame(Message):
    """Metadata of one video frame; the image bytes travel as the Kafka value."""

    schema_name: ClassVar[str] = "video_frame"
    camera: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=0)
    ts: float
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    channels: Literal[1, 3] = 1
    encoding: Literal["jpeg", "raw"] = "jpeg"


class Score(Message):
    """The anomaly score of one window or frame."""

    schema_name: ClassVar[str] = "score"
    modality: Modality
    stream: str
    ts: float
    score: float
    threshold: float
    is_anomaly: bool
    model: str
    model_version: str
    contributions: dict[str, float] = Field(default_factory=dict)
    location: tuple[float, float] | None = None
    produced_at: float | None = None


class Alert(Message):
    """An alert transition: ``firing`` when it starts, ``resolved`` when it ends."""

    schema_name: ClassVar[str] = "alert"
    alert_id: str
    modality: Modality
    stream: str
    state: Literal["firing", "resolved"]
    severity: Severity
    started_at: float
    ts: float
    score: float
    threshold: float
    model: str
    top_channels: list[str] = Field(default_factory=list)
    location: tuple[float, float] | None = None


class DeadLetter(Message):
    """A message that failed validation or scoring permanently, with the reason."""

    schema_name: ClassVar[str] = "dead_letter"
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    reason: str
    error_type: str
    payload: str
    payload_encoding: Literal["utf-8", "base64"] = "utf-8"
    # A payload too large for the broker travels cut short: its size and hash still identify the original.
    payload_truncated: bool = False
    payload_bytes: int | None = None
    payload_sha256: str | None = None
    ts: float


M = TypeVar("M", bound=Message)


def decode(model: type[M], raw: bytes | str | dict[str, Any]) -> M:
    """Parse and validate one message; every failure becomes a :class:`ContractError` with the reason."""
    if isinstance(raw, bytes | str):
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ContractError(f"malformed JSON: {error}") from error
    else:
        data = raw
    if not isinstance(data, dict):
        raise ContractError(f"expected a JSON object, got {type(data).__name__}")
    data = dict(data)
    schema = data.pop("schema", model.schema_name)
    if schema != model.schema_name:
        raise ContractError(f"expected schema {model.schema_name!r}, got {schema!r}")
    version = data.get("version", 1)
    if version != 1:
        raise ContractError(f"unsupported {model.schema_name} version {version!r}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'message'}: {item['msg']}" for item in error.errors()
        )
        raise ContractError(f"invalid {model.schema_name}: {reasons}") from error
