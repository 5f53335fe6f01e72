import asyncio

from prometheus_client import REGISTRY

from core.contracts import Alert, AlertEvent, Score
from operators.influx_sink import InfluxSink, alert_event_point, alert_point, event_time_ms, score_point
from operators.resilience import Backoff


def sensor_score(**overrides) -> Score:
    fields = dict(
        modality="sensor",
        stream="pump 1",
        event_time=1583748873.123456,
        score=2.5,
        threshold=1.0,
        is_anomaly=True,
        model="ts_diffusion",
        model_version="3",
        contributions={"Current": 0.1, "Volume Flow RateRMS": 0.7, "Pressure": 0.5, "Voltage": 0.2},
    )
    fields.update(overrides)
    return Score(**fields)


def test_sensor_point_has_tags_fields_top_contributions_and_event_time() -> None:
    line = score_point(sensor_score(), top_n=2).to_line_protocol()
    assert line.startswith("sensor_scores,asset=pump\\ 1,model=ts_diffusion,version=3 ")
    assert "score=2.5" in line and "threshold=1" in line and "is_anomaly=true" in line
    assert "contribution_Volume_Flow_RateRMS=0.7" in line and "contribution_Pressure=0.5" in line
    assert "contribution_Current" not in line and "contribution_Voltage" not in line
    assert line.endswith(" 1583748873123")


def test_redelivered_score_gives_the_identical_line_so_the_store_overwrites_it() -> None:
    first = score_point(sensor_score(produced_at=1.0)).to_line_protocol()
    again = score_point(sensor_score(produced_at=99.0)).to_line_protocol()
    assert first == again


def test_video_point_is_tagged_by_camera_with_location_and_default_version() -> None:
    score = Score(
        modality="video",
        stream="cam-1",
        event_time=10.0,
        score=0.3,
        threshold=0.5,
        is_anomaly=False,
        model="video_diffusion",
        model_version="",
        location=(0.25, 0.75),
    )
    line = score_point(score).to_line_protocol()
    assert line.startswith("video_scores,camera=cam-1,model=video_diffusion,version=default ")
    assert "location_y=0.25" in line and "location_x=0.75" in line and "is_anomaly=false" in line
    assert line.endswith(" 10000")


def test_alert_point() -> None:
    alert = Alert(
        alert_id="a1",
        modality="sensor",
        stream="pump",
        state="firing",
        severity="critical",
        started_at=5.0,
        event_time=5.0,
        score=3.0,
        threshold=1.0,
        model="ts_diffusion",
        top_channels=["Current", "Pressure"],
    )
    line = alert_point(alert).to_line_protocol()
    assert line.startswith("alerts,modality=sensor,model=ts_diffusion,severity=critical,stream=pump ")
    assert "firing=1i" in line and 'top_channels="Current,Pressure"' in line and line.endswith(" 5000")


def test_alert_event_points_are_tagged_by_kind_and_stream_and_keep_what_is_set() -> None:
    fired = AlertEvent(event_id="ev-1", kind="fired", at=7.5, alert_id="a1", modality="sensor", stream="pump")
    line = alert_event_point(fired).to_line_protocol()
    assert line.startswith("alert_events,event_id=ev-1,kind=fired,modality=sensor,stream=pump ")
    assert "count=1i" in line and 'alert_id="a1"' in line and 'actor="system"' in line
    assert "until" not in line and line.endswith(" 7500")
    ended = AlertEvent(event_id="ev-2", kind="silence_expired", at=9.0, actor="ana", ref="si-1", until=9.0)
    line = alert_event_point(ended).to_line_protocol()
    assert line.startswith("alert_events,event_id=ev-2,kind=silence_expired ")
    assert 'ref="si-1"' in line and "until=9" in line and "alert_id" not in line


def test_event_time_rounds_to_milliseconds() -> None:
    assert event_time_ms(1.0004) == 1000 and event_time_ms(1.0006) == 1001
    assert event_time_ms(1583748873.25) == 1583748873250


def sink_errors() -> float:
    return REGISTRY.get_sample_value("diffsentry_sink_errors_total") or 0.0


class FlakyWriteApi:
    """Stands in for the store's write API: fails ``failures`` times, then keeps what it is sent."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.records: list[str] = []

    async def write(self, *, record: str, **_: object) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store down")
        self.records.append(record)


async def test_points_wait_while_the_store_fails_and_are_acknowledged_once_written() -> None:
    sink = InfluxSink(
        "http://127.0.0.1:9", "token", "org", "bucket", flush_interval_s=0.0, backoff=Backoff(initial_s=0.0)
    )
    await sink.start()
    store = FlakyWriteApi(failures=3)
    sink._write_api = store  # type: ignore[assignment]
    errors_before = sink_errors()
    try:
        first, second = score_point(sensor_score()), score_point(sensor_score(stream="pump 2"))
        acknowledged = sink.write([first, second])
        await asyncio.wait_for(acknowledged, timeout=5)
        assert store.records == [first.to_line_protocol() + "\n" + second.to_line_protocol()]
        assert sink_errors() - errors_before == 3
        assert sink.breaker.state == "closed"
    finally:
        await sink.aclose()
