"""Typed, versioned message contracts between stages.

Wire format:
- sensor readings, sensor windows, scores, alerts and dead letters are UTF-8 JSON objects, each carrying
  ``schema`` (its type) and ``version``; keys are the asset or camera id.
- video frames carry the image bytes (JPEG, or raw uint8 row-major) as the Kafka value and their metadata
  as a JSON header ``diffsentry-frame``, so that a frame is never base64-inflated.

``decode(model, raw)`` is the boundary for everything that comes from outside: it returns a valid message or
raises :class:`ContractError` whose message says what was wrong, never another exception. Its rules:

- at most ``MAX_MESSAGE_BYTES`` (1 MiB, Kafka's default largest message) and ``MAX_JSON_DEPTH`` levels of nested
  arrays and objects, checked by a scan without recursion before the JSON is parsed;
- strict types: a number field takes a JSON number (an integer where the field is one), never a string or a
  boolean; a boolean field takes only ``true``/``false``;
- every number finite (``NaN``, ``Infinity`` and numbers too large for a double are refused);
- event times are seconds since the epoch from 1970-01-01 to 2200-01-01 (``MAX_EVENT_TIME``): within what InfluxDB
  (nanoseconds in an int64, up to 2262) and VictoriaMetrics (milliseconds, from 1970) can store;
- a video frame declares at most ``MAX_FRAME_SIDE`` pixels a side and ``MAX_FRAME_PIXELS`` in all (DCI 4K).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

FRAME_HEADER = "diffsentry-frame"

Modality = Literal["sensor", "video"]
Severity = Literal["info", "warning", "critical"]
SEVERITY_ORDER: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

MAX_MESSAGE_BYTES = 1 << 20
# The deepest contract (a window's values) nests three levels; the margin costs nothing.
MAX_JSON_DEPTH = 16
MAX_EVENT_TIME = 7_258_118_400.0  # 2200-01-01T00:00:00Z
MAX_FRAME_SIDE = 4096
MAX_FRAME_PIXELS = 4096 * 2160


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


def _tuple_from_array(value: Any) -> Any:
    # A JSON array is a list; strict validation would refuse it for a tuple field.
    return tuple(value) if isinstance(value, list) else value


def _integer_not_bool(value: Any) -> Any:
    # Literal[1, 3] compares by equality, so even strict validation takes true and 3.0 for it.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected the integer 1 or 3, got {value!r}")
    return value


Finite = Annotated[float, Field(allow_inf_nan=False)]
EventTime = Annotated[float, Field(ge=0.0, le=MAX_EVENT_TIME, allow_inf_nan=False)]
StreamId = Annotated[str, Field(min_length=1, max_length=200)]
Location = Annotated[tuple[Finite, Finite], BeforeValidator(_tuple_from_array)]


class SensorReading(Message):
    """One sample of every channel of an asset at one event time (seconds since the epoch)."""

    schema_name: ClassVar[str] = "sensor_reading"
    asset: StreamId
    event_time: EventTime
    values: dict[str, Finite] = Field(min_length=1)


class SensorWindow(Message):
    """A window of readings of one asset, ``values[step][channel]``; ``observed`` marks real samples."""

    schema_name: ClassVar[str] = "sensor_window"
    asset: StreamId
    start_time: EventTime
    end_time: EventTime
    channels: list[str]
    values: list[list[Finite]]
    observed: list[list[bool]]

    @model_validator(mode="after")
    def _shape(self) -> SensorWindow:
        width = len(self.channels)
        if len(self.values) != len(self.observed):
            raise ValueError("values and observed differ in length")
        for step, (row, mask) in enumerate(zip(self.values, self.observed, strict=True)):
            if len(row) != width or len(mask) != width:
                raise ValueError(f"step {step} has {len(row)} values for {width} channels")
        return self


class VideoFrame(Message):
    """Metadata of one video frame; the image bytes travel as the Kafka value."""

    schema_name: ClassVar[str] = "video_frame"
    camera: StreamId
    seq: int = Field(ge=0, lt=2**63)
    event_time: EventTime
    width: int = Field(gt=0, le=MAX_FRAME_SIDE)
    height: int = Field(gt=0, le=MAX_FRAME_SIDE)
    channels: Annotated[Literal[1, 3], BeforeValidator(_integer_not_bool)] = 1
    encoding: Literal["jpeg", "raw"] = "jpeg"

    @model_validator(mode="after")
    def _pixels(self) -> VideoFrame:
        if self.width * self.height > MAX_FRAME_PIXELS:
            raise ValueError(f"{self.width}x{self.height} is more than {MAX_FRAME_PIXELS} pixels")
        return self


class Score(Message):
    """The anomaly score of one window or frame."""

    schema_name: ClassVar[str] = "score"
    modality: Modality
    stream: StreamId
    event_time: EventTime
    score: Finite
    threshold: Finite
    is_anomaly: bool
    model: str
    model_version: str
    contributions: dict[str, Finite] = Field(default_factory=dict)
    location: Location | None = None
    produced_at: EventTime | None = None


class Alert(Message):
    """An alert transition: ``firing`` when it starts, ``resolved`` when it ends."""

    schema_name: ClassVar[str] = "alert"
    alert_id: str
    modality: Modality
    stream: StreamId
    state: Literal["firing", "resolved"]
    severity: Severity
    started_at: EventTime
    event_time: EventTime
    score: Finite
    threshold: Finite
    model: str
    top_channels: list[str] = Field(default_factory=list)
    location: Location | None = None


AlertEventKind = Literal[
    "fired",  # an alert started (the engine's firing transition)
    "escalated",  # its severity rose
    "resolved",
    "acknowledged",
    "unacknowledged",  # the acknowledgement was withdrawn
    "ack_expired",  # an acknowledgement's expiry passed while the alert still fires: it notifies again
    "suppressed",  # a transition matched a silence or a maintenance window: recorded, not delivered
    "repeated",  # a still-firing alert notified again after repeat_interval_s
    "silence_created",
    "silence_expired",  # its end passed, or it was ended early
    "maintenance_window_created",
    "maintenance_window_deleted",
]


class AlertEvent(Message):
    """A change in an alert's life: a transition, or what an operator did about it (wall-clock ``at``).

    ``alert_id``/``modality``/``stream`` are None for events about a silence or a maintenance window itself;
    ``ref`` names the silence, window or notification concerned; ``actor`` is who did it ("system" for timers).
    """

    schema_name: ClassVar[str] = "alert_event"
    event_id: str = Field(min_length=1, max_length=100)
    kind: AlertEventKind
    at: EventTime
    alert_id: str | None = None
    modality: Modality | None = None
    stream: StreamId | None = None
    actor: str = Field(default="system", min_length=1, max_length=200)
    comment: str = Field(default="", max_length=2000)
    ref: str | None = None
    until: EventTime | None = None  # an acknowledgement's expiry, a silence's end


NotificationReason = Literal["transition", "repeat", "ack_expired"]


class Notification(Message):
    """What one subscriber receives at once: the transitions of one group (e.g. the streams of one asset) that
    arrived within ``group_wait_s``, or a reminder of alerts still firing.

    ``notification_id`` is derived from the group, the reason and the member transitions, so the same
    notification computed twice (a retry, a restart, another instance) has the same id: receivers dedupe on it.
    """

    schema_name: ClassVar[str] = "notification"
    notification_id: str = Field(min_length=1, max_length=100)
    group: str = Field(min_length=1, max_length=400)
    reason: NotificationReason
    alerts: list[Alert] = Field(min_length=1)
    created_at: EventTime


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
    created_at: EventTime  # when the dead letter was made (wall clock)


M = TypeVar("M", bound=Message)

# A string token (skipped whole: brackets inside strings do not nest) or a bracket.
_JSON_NESTING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _check_nesting(text: str) -> None:
    """Refuses JSON nested deeper than MAX_JSON_DEPTH before the (recursive) parser sees it."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return  # cannot nest deeper than it has brackets: most messages need no scan (it costs ~15 us each)
    depth = 0
    for token in _JSON_NESTING.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise ContractError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        elif bracket in ("]", "}"):
            depth -= 1


def _refuse_constant(name: str) -> float:
    raise ContractError(f"{name} in JSON: numbers must be finite")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)  # one for all: building one costs a few us


def _parse(raw: bytes | str) -> Any:
    if len(raw) > MAX_MESSAGE_BYTES:
        unit = "bytes" if isinstance(raw, bytes) else "characters"
        raise ContractError(f"message of {len(raw)} {unit}, more than {MAX_MESSAGE_BYTES}")
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as error:
        raise ContractError(f"malformed JSON: not UTF-8: {error}") from error
    _check_nesting(text)
    try:
        return _DECODER.decode(text)
    except ContractError:
        raise
    except ValueError as error:  # JSONDecodeError, and integers with more digits than Python converts
        raise ContractError(f"malformed JSON: {error}") from error


def decode(model: type[M], raw: bytes | str | dict[str, Any]) -> M:
    """Parse and validate one message; every failure becomes a :class:`ContractError` with the reason."""
    data = _parse(raw) if isinstance(raw, bytes | str) else raw
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
        return model.model_validate(data, strict=True)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'message'}: {item['msg']}" for item in error.errors()
        )
        raise ContractError(f"invalid {model.schema_name}: {reasons}") from error
