import math

import pytest

from pipeline.contracts import ContractError, SensorReading, decode


def test_reading_round_trips_through_json() -> None:
    reading = SensorReading(asset="pump-1", ts=1.5, values={"Current": 1.0, "Pressure": 0.2})
    assert decode(SensorReading, reading.to_json()) == reading


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"schema": "alert", "asset": "a", "ts": 1, "values": {"x": 1}}', "expected schema"),
        (b'{"asset": "a", "ts": 1, "values": {}}', "values"),
        (b'{"asset": "a", "ts": 1, "values": {"x": 1}, "version": 2}', "unsupported"),
    ],
)
def test_invalid_readings_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        decode(SensorReading, raw)


def test_non_finite_values_are_rejected_with_the_channel_name() -> None:
    with pytest.raises(ContractError, match="Current"):
        decode(SensorReading, {"asset": "a", "ts": 1.0, "values": {"Current": math.nan}})
