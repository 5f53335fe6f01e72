import base64
import json
import math

import pytest

from core.contracts import (
    FRAME_HEADER,
    MAX_EVENT_TIME,
    MAX_FRAME_PIXELS,
    MAX_FRAME_SIDE,
    MAX_JSON_DEPTH,
    MAX_MESSAGE_BYTES,
    Alert,
    ContractError,
    DeadLetter,
    Message,
    Score,
    SensorReading,
    SensorWindow,
    VideoFrame,
    decode,
)


def test_reading_round_trips_through_json() -> None:
    reading = SensorReading(asset="pump-1", event_time=1.5, values={"Current": 1.0, "Pressure": 0.2})
    assert decode(SensorReading, reading.to_json()) == reading


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"schema": "alert", "asset": "a", "event_time": 1, "values": {"x": 1}}', "expected schema"),
        (b'{"asset": "a", "event_time": 1, "values": {}}', "values"),
        (b'{"asset": "a", "event_time": 1, "values": {"x": 1}, "version": 2}', "unsupported"),
    ],
)
def test_invalid_readings_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(SensorReading, raw)


def test_non_finite_values_are_rejected_with_the_channel_name() -> None:
    with pytest.raises(ContractError, match="Current"):
        decode(SensorReading, {"asset": "a", "event_time": 1.0, "values": {"Current": math.nan}})


# --- every contract ---------------------------------------------------------------------------------------------

EXAMPLES: list[Message] = [
    SensorReading(asset="pump-1", event_time=1_600_000_000.25, values={"Accelerometer1RMS": 0.21, "Pressure": -0.01}),
    SensorWindow(
        asset="pump-1",
        start_time=10.0,
        end_time=12.0,
        channels=["Current", "Pressure"],
        values=[[1.0, 0.5], [1.1, 0.0], [0.9, 0.4]],
        observed=[[True, True], [True, False], [True, True]],
    ),
    VideoFrame(camera="ped2-cam", seq=17, event_time=3.5, width=360, height=240, channels=1, encoding="jpeg"),
    Score(
        modality="sensor",
        stream="pump-1",
        event_time=12.0,
        score=3.25,
        threshold=2.0,
        is_anomaly=True,
        model="ts_diffusion",
        model_version="1",
        contributions={"Current": 2.5, "Pressure": 0.75},
        produced_at=12.01,
    ),
    Score(
        modality="video",
        stream="ped2-cam",
        event_time=3.5,
        score=0.1,
        threshold=0.4,
        is_anomaly=False,
        model="video_diffusion",
        model_version="3",
        location=(120.0, 64.5),
    ),
    Alert(
        alert_id="pump-1:1",
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
    ),
    DeadLetter(
        source_topic="diffsentry.sensor-readings",
        partition=2,
        offset=41,
        key="pump-1",
        reason="invalid sensor_reading: values: Field required",
        error_type="ContractError",
        payload='{"asset": "pump-1"}',
        created_at=13.0,
    ),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_contract_round_trips_through_json(message: Message) -> None:
    raw = message.to_json()
    wire = json.loads(raw)
    assert wire["schema"] == type(message).schema_name
    assert wire["version"] == 1
    assert decode(type(message), raw) == message


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_message_is_not_accepted_as_another_contract(message: Message) -> None:
    other = SensorReading if not isinstance(message, SensorReading) else Score
    with pytest.raises(ContractError, match="expected schema"):
        decode(other, message.to_json())


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ContractError, match="colour: Extra inputs"):
        decode(SensorReading, {"asset": "a", "event_time": 1.0, "values": {"x": 1.0}, "colour": "red"})


def test_video_frame_metadata_travels_as_a_header_beside_the_image_bytes() -> None:
    frame = VideoFrame(camera="cam-1", seq=0, event_time=1.0, width=4, height=2, channels=1, encoding="raw")
    image = bytes(range(8))
    headers = [(FRAME_HEADER, frame.to_json())]
    received = decode(VideoFrame, dict(headers)[FRAME_HEADER])
    assert received == frame
    assert len(image) == received.width * received.height * received.channels


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"seq": -1}, "seq"),
        ({"width": 0}, "width"),
        ({"channels": 2}, "channels"),
        ({"encoding": "png"}, "encoding"),
        ({"camera": ""}, "camera"),
    ],
)
def test_invalid_video_frames_say_why(change: dict, reason: str) -> None:
    metadata = {"camera": "cam-1", "seq": 0, "event_time": 1.0, "width": 4, "height": 2} | change
    with pytest.raises(ContractError, match=reason):
        decode(VideoFrame, metadata)


def test_sensor_window_shape_is_checked() -> None:
    with pytest.raises(ContractError, match="step 1 has 1 values for 2 channels"):
        decode(
            SensorWindow,
            {
                "asset": "a",
                "start_time": 0.0,
                "end_time": 1.0,
                "channels": ["x", "y"],
                "values": [[1.0, 2.0], [3.0]],
                "observed": [[True, True], [True]],
            },
        )


def test_dead_letter_carries_binary_payloads_as_base64() -> None:
    raw = b"\xff\xd8\xff not utf-8"
    letter = DeadLetter(
        source_topic="diffsentry.video-frames",
        reason="frame header missing",
        error_type="ContractError",
        payload=base64.b64encode(raw).decode(),
        payload_encoding="base64",
        created_at=2.0,
    )
    received = decode(DeadLetter, letter.to_json())
    assert base64.b64decode(received.payload) == raw
    assert received.partition is None and received.offset is None


def test_scores_must_be_finite() -> None:
    with pytest.raises(ValueError, match="finite number"):
        Score(
            modality="sensor",
            stream="s",
            event_time=1.0,
            score=math.inf,
            threshold=1.0,
            is_anomaly=True,
            model="m",
            model_version="1",
        )


# --- the decode boundary ----------------------------------------------------------------------------------------

READING = {"asset": "a", "event_time": 1_700_000_000.0, "values": {"x": 1.5}}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"event_time": "1700000000"}, "event_time: Input should be a valid number"),
        ({"event_time": True}, "event_time: Input should be a valid number"),
        ({"values": {"x": "1.5"}}, "values.x: Input should be a valid number"),
        ({"values": {"x": True}}, "values.x: Input should be a valid number"),
        ({"asset": 7}, "asset: Input should be a valid string"),
        ({"version": 1.0}, "version: Input should be a valid integer"),
    ],
)
def test_numbers_are_json_numbers_not_strings_or_booleans(change: dict, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(SensorReading, json.dumps(READING | change))


def test_frame_fields_are_strict_too() -> None:
    header = {"camera": "c", "seq": 1, "event_time": 1.0, "width": 4, "height": 2}
    for change, reason in [({"seq": 1.0}, "seq"), ({"width": "4"}, "width"), ({"channels": True}, "integer 1 or 3")]:
        with pytest.raises(ContractError, match=reason):
            decode(VideoFrame, json.dumps(header | change))
    assert decode(Score, EXAMPLES[4].to_json()).location == (120.0, 64.5)  # a JSON array is the location tuple


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_nan_and_infinity_are_refused(constant: str) -> None:
    with pytest.raises(ContractError, match=f"{constant} in JSON"):
        decode(SensorReading, '{"asset": "a", "event_time": 1.0, "values": {"x": ' + constant + "}}")


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        ("1e400", "finite number"),  # parses to inf
        ("-1", "greater than or equal to 0"),
        ("7258118401", "less than or equal to 7258118400"),  # after 2200-01-01
    ],
)
def test_event_times_are_finite_and_between_1970_and_2200(ts: str, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(SensorReading, '{"asset": "a", "event_time": ' + ts + ', "values": {"x": 1}}')
    assert (
        decode(SensorReading, '{"asset": "a", "event_time": 7258118400, "values": {"x": 1}}').event_time
        == MAX_EVENT_TIME
    )


def test_deep_nesting_is_refused_without_recursion() -> None:
    with pytest.raises(ContractError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        decode(SensorReading, b"[" * 100_000)
    with pytest.raises(ContractError, match="nested deeper"):
        decode(SensorReading, '{"asset": "a", "x": ' + "[" * 17 + "]" * 17 + "}")
    # Brackets inside strings do not nest.
    with pytest.raises(ContractError, match="asset: String should have at most 200"):
        decode(SensorReading, json.dumps(READING | {"asset": "[" * 300 + '\\"'}))


def test_oversized_and_undecodable_messages_are_refused() -> None:
    with pytest.raises(ContractError, match=f"more than {MAX_MESSAGE_BYTES}"):
        decode(DeadLetter, b" " * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ContractError, match="not UTF-8"):
        decode(SensorReading, b'{"asset": "\xff"}')
    with pytest.raises(ContractError, match="malformed JSON: Exceeds the limit"):
        decode(VideoFrame, '{"seq": 1' + "0" * 5000 + "}")


def test_frame_headers_bound_the_frame_size() -> None:
    header = {"camera": "c", "seq": 1, "event_time": 1.0}
    decode(VideoFrame, header | {"width": MAX_FRAME_SIDE, "height": MAX_FRAME_PIXELS // MAX_FRAME_SIDE})
    with pytest.raises(ContractError, match="less than or equal to 4096"):
        decode(VideoFrame, header | {"width": 65000, "height": 1})
    with pytest.raises(ContractError, match="more than 8847360 pixels"):
        decode(VideoFrame, header | {"width": 4096, "height": 4096})
