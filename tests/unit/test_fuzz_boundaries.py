"""Property-based fuzzing of everything that parses external input: each gives a valid result or a ContractError
(which the worker dead-letters), never another exception."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from core.contracts import (
    MAX_EVENT_TIME,
    Alert,
    ContractError,
    DeadLetter,
    Message,
    Notification,
    Score,
    SensorReading,
    SensorWindow,
    VideoFrame,
    decode,
)
from operators.channels import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from operators.frames import decode_frame
from operators.webhook_receiver import parse_delivery
from operators.windowing import SensorWindower

# Short runs keep the unit suite fast; each run draws new examples, so coverage grows run after run.
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

EXAMPLES: dict[type[Message], Message] = {
    SensorReading: SensorReading(
        asset="pump-1", event_time=1_600_000_000.25, values={"Current": 0.2, "Pressure": -0.01}
    ),
    SensorWindow: SensorWindow(
        asset="pump-1",
        start_time=10.0,
        end_time=11.0,
        channels=["Current", "Pressure"],
        values=[[1.0, 0.5], [1.1, 0.0]],
        observed=[[True, True], [True, False]],
    ),
    VideoFrame: VideoFrame(camera="cam-1", seq=17, event_time=3.5, width=360, height=240, channels=1, encoding="jpeg"),
    Score: Score(
        modality="video",
        stream="cam-1",
        event_time=3.5,
        score=0.1,
        threshold=0.4,
        is_anomaly=False,
        model="video_diffusion",
        model_version="3",
        contributions={"Current": 2.5},
        location=(0.5, 0.25),
        produced_at=3.6,
    ),
    Alert: Alert(
        alert_id="al-1",
        modality="sensor",
        stream="pump-1",
        state="firing",
        severity="critical",
        started_at=12.0,
        event_time=12.0,
        score=3.25,
        threshold=2.0,
        model="ts_diffusion",
        top_channels=["Current"],
        location=(0.1, 0.9),
    ),
    DeadLetter: DeadLetter(
        source_topic="diffsentry.sensor-readings",
        partition=2,
        offset=41,
        key="pump-1",
        reason="invalid",
        error_type="ContractError",
        payload="{}",
        created_at=13.0,
    ),
}
EXAMPLES[Notification] = Notification(
    notification_id="nt-0123456789abcdef0123",
    group="sensor/pump-1",
    reason="transition",
    alerts=[EXAMPLES[Alert]],  # type: ignore[list-item]
    created_at=14.0,
)


@st.composite
def mutated(draw: st.DrawFn, example: Message) -> bytes:
    """The example's wire JSON with a few fields replaced by arbitrary JSON, removed or added."""
    data: dict[str, Any] = json.loads(example.to_json())
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(data)) | st.text(max_size=6))
        if draw(st.booleans()):
            data[key] = draw(JSON_VALUES)
        else:
            data.pop(key, None)
    return json.dumps(data).encode()


def wire_inputs(example: Message) -> st.SearchStrategy[bytes | str]:
    nested = st.integers(1, 200).map(lambda depth: "[" * depth + "]" * depth)
    return (
        mutated(example)
        | JSON_VALUES.map(json.dumps)
        | st.binary(max_size=64)
        | nested
        | st.binary(max_size=64).map(lambda junk: example.to_json()[:-1] + junk)
    )


def decoded_or_refused(model: type[Message], raw: bytes | str) -> Message | None:
    try:
        message = decode(model, raw)
    except ContractError:
        return None
    assert decode(model, message.to_json()) == message  # valid: it survives its own wire format
    return message


def _fuzz_contract(model: type[Message]) -> None:
    @FUZZ
    @given(raw=wire_inputs(EXAMPLES[model]))
    def run(raw: bytes | str) -> None:
        decoded_or_refused(model, raw)

    run()


def test_sensor_readings_decode_or_are_refused() -> None:
    _fuzz_contract(SensorReading)


def test_sensor_windows_decode_or_are_refused() -> None:
    _fuzz_contract(SensorWindow)


def test_video_frame_headers_decode_or_are_refused() -> None:
    _fuzz_contract(VideoFrame)


def test_scores_decode_or_are_refused() -> None:
    _fuzz_contract(Score)


def test_alerts_decode_or_are_refused() -> None:
    _fuzz_contract(Alert)


def test_dead_letters_decode_or_are_refused() -> None:
    _fuzz_contract(DeadLetter)


# --- frames -----------------------------------------------------------------------------------------------------


def _jpeg(height: int, width: int, mode: str) -> bytes:
    pixels = np.random.default_rng(height * width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG")
    return buffer.getvalue()


JPEGS = {(8, 12, "L"): _jpeg(8, 12, "L"), (16, 16, "RGB"): _jpeg(16, 16, "RGB")}


@st.composite
def frames(draw: st.DrawFn) -> tuple[VideoFrame, bytes]:
    """A frame header and a payload: a damaged real JPEG of the declared size, random bytes, or a raw frame of
    about the declared length."""
    kind = draw(st.sampled_from(["damaged jpeg", "random", "raw"]))
    if kind == "damaged jpeg":
        (height, width, mode), payload = draw(st.sampled_from(sorted(JPEGS.items())))
        data = bytearray(payload)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        payload = bytes(data[: draw(st.integers(0, len(data)))])
        header = VideoFrame(
            camera="c", seq=0, event_time=0.0, width=width, height=height, channels=3 if mode == "RGB" else 1
        )
        return header, payload
    height, width, channels = draw(st.integers(1, 16)), draw(st.integers(1, 16)), draw(st.sampled_from([1, 3]))
    encoding = "jpeg" if kind == "random" else "raw"
    header = VideoFrame(
        camera="c", seq=0, event_time=0.0, width=width, height=height, channels=channels, encoding=encoding
    )
    if kind == "random":
        return header, draw(st.binary(max_size=256))
    return header, bytes(height * width * channels + draw(st.sampled_from([0, 0, -1, 1])))


@FUZZ
@given(frame=frames())
def test_frames_decode_to_the_model_size_or_are_refused(frame: tuple[VideoFrame, bytes]) -> None:
    header, payload = frame
    try:
        image = decode_frame(header, payload, height=6, width=9)
    except ContractError:
        return
    assert image.shape == (6, 9) and image.dtype == np.uint8


# --- windowing --------------------------------------------------------------------------------------------------

CHANNELS = ("a", "b")


@st.composite
def readings(draw: st.DrawFn) -> bytes:
    """Mostly readings the worker would accept, with values and times anywhere a double can be."""
    times = st.floats(MAX_EVENT_TIME - 10, MAX_EVENT_TIME) | st.floats(0, 100) | st.floats(allow_nan=True)
    values = st.floats(-10.0, 10.0) | st.floats(allow_nan=True, allow_infinity=True)
    reading = {
        "schema": "sensor_reading",
        "asset": draw(st.sampled_from(["p1", "p2"])),
        "event_time": draw(times),
        "values": draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), values, min_size=1)),
    }
    return json.dumps(reading).encode()


@FUZZ
@given(stream=st.lists(readings() | mutated(EXAMPLES[SensorReading]), max_size=25))
def test_windowing_decoded_readings_gives_finite_windows_or_refuses_them(stream: list[bytes]) -> None:
    windower = SensorWindower(CHANNELS, window=4, stride=2, sample_period_s=0.5, allowed_lateness=1)
    for offset, raw in enumerate(stream):
        try:
            windows = windower.add(decode(SensorReading, raw), ref=offset)
        except ContractError:
            continue
        for window in windows:
            assert window.values.shape == window.observed.shape == (4, len(CHANNELS))
            assert window.values.dtype == np.float32 and np.isfinite(window.values).all()
            assert window.observed.any() and window.window.end_time >= window.window.start_time


# --- the webhook receiver ---------------------------------------------------------------------------------------

SECRET = "receiver-secret-0123456789"


@FUZZ
@given(
    body=wire_inputs(EXAMPLES[Notification]).map(lambda raw: raw if isinstance(raw, bytes) else raw.encode()),
    signature=st.none() | st.just("signed") | st.text(max_size=80),
    key=st.text(max_size=40),
)
def test_webhook_requests_parse_or_are_refused(body: bytes, signature: str | None, key: str) -> None:
    headers = {IDEMPOTENCY_HEADER: key}
    if signature is not None:
        headers[SIGNATURE_HEADER] = sign(SECRET, body) if signature == "signed" else signature
    try:
        parsed_key, notification = parse_delivery(SECRET, body, headers)
    except ContractError:
        return
    assert parsed_key == key and decode(Notification, notification.to_json()) == notification
