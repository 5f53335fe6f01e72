from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.contracts import Alert, AlertEvent, Modality, Severity
from operators.lifecycle import (
    Acknowledgement,
    MaintenanceWindow,
    MaintenanceWindowSpec,
    Matchers,
    Silence,
    SilenceSpec,
)
from tests.state import lifecycle_store


def alert(
    stream: str = "pump-1", modality: Modality = "sensor", severity: Severity = "warning", model: str = "ts_diffusion"
) -> Alert:
    return Alert(
        alert_id="al-1", modality=modality, stream=stream, state="firing", severity=severity, started_at=0.0,
        event_time=1.0, score=2.0, threshold=1.0, model=model,
    )  # fmt: skip


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        (Matchers(), True),
        (Matchers(stream="pump-*"), True),
        (Matchers(stream="fan-*"), False),
        (Matchers(modality="sensor"), True),
        (Matchers(modality="video"), False),
        (Matchers(severity="warning"), True),
        (Matchers(severity="critical"), False),
        (Matchers(model="ts_*"), True),
        (Matchers(model="video_*"), False),
        (Matchers(stream="pump-?", modality="sensor", severity="warning", model="ts_diffusion"), True),
    ],
)
def test_matchers_take_an_alert_only_when_every_matcher_does(matchers: Matchers, expected: bool) -> None:
    assert matchers.matches(alert()) is expected


def test_a_silence_is_pending_then_active_then_expired() -> None:
    silence = Silence(id="si-1", starts_at=100.0, ends_at=200.0, created_by="ana", created_at=50.0)
    assert [silence.state_at(t) for t in (99.9, 100.0, 199.9, 200.0)] == ["pending", "active", "active", "expired"]
    assert silence.silences(alert(), 150.0) and not silence.silences(alert(), 250.0)
    assert not Silence(
        id="si-2", matchers=Matchers(stream="fan-*"), starts_at=100.0, ends_at=200.0, created_by="ana", created_at=0.0
    ).silences(alert(), 150.0)


def test_a_silence_always_ends_after_it_starts() -> None:
    with pytest.raises(ValidationError, match="ends_at"):
        SilenceSpec.model_validate({"created_by": "ana"})
    with pytest.raises(ValidationError, match="ends_at must be after starts_at"):
        SilenceSpec(starts_at=200.0, ends_at=200.0, created_by="ana")


def sunday_night(**fields: object) -> MaintenanceWindow:
    spec = {"name": "shutdown", "weekdays": [6], "start": "02:00", "end": "04:00", "timezone": "Europe/Berlin"}
    return MaintenanceWindow.model_validate({**spec, **fields, "created_by": "ana", "id": "mw-1", "created_at": 0.0})


def minutes_active(window: MaintenanceWindow, start: float, hours: int = 24) -> int:
    return sum(window.active_at(start + 60 * minute) for minute in range(60 * hours))


def test_a_berlin_window_follows_local_time_across_both_dst_changes() -> None:
    window = sunday_night()
    # 2026-03-29: clocks go from 02:00 CET to 03:00 CEST, so 02:00-04:00 local is one real hour (01:00-02:00 UTC).
    assert minutes_active(window, utc(2026, 3, 28, 12)) == 60
    assert not window.active_at(utc(2026, 3, 29, 0, 59)) and window.active_at(utc(2026, 3, 29, 1, 0))
    assert window.active_at(utc(2026, 3, 29, 1, 59)) and not window.active_at(utc(2026, 3, 29, 2, 0))
    # 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET: 02:00-03:00 happens twice, three real hours.
    assert minutes_active(window, utc(2026, 10, 24, 12)) == 180
    assert window.active_at(utc(2026, 10, 25, 0, 0)) and window.active_at(utc(2026, 10, 25, 2, 59))
    assert not window.active_at(utc(2026, 10, 24, 23, 59)) and not window.active_at(utc(2026, 10, 25, 3, 0))
    # an ordinary summer Sunday: two hours, 00:00-02:00 UTC; and nothing on a Monday
    assert minutes_active(window, utc(2026, 7, 4, 12)) == 120
    assert window.active_at(utc(2026, 7, 5, 0, 0)) and not window.active_at(utc(2026, 7, 5, 2, 0))
    assert minutes_active(window, utc(2026, 7, 6, 0)) == 0


def test_a_window_ending_at_or_before_its_start_runs_past_midnight() -> None:
    friday_night = sunday_night(weekdays=[4], start="22:00", end="06:00", timezone="UTC")  # 2026-07-03 is a Friday
    assert not friday_night.active_at(utc(2026, 7, 3, 21, 59))
    assert friday_night.active_at(utc(2026, 7, 3, 22, 0)) and friday_night.active_at(utc(2026, 7, 3, 23, 59))
    assert friday_night.active_at(utc(2026, 7, 4, 5, 59)) and not friday_night.active_at(utc(2026, 7, 4, 6, 0))
    assert not friday_night.active_at(utc(2026, 7, 4, 22, 30))  # Saturday evening is not in the window
    assert not friday_night.active_at(utc(2026, 7, 2, 23, 0))  # nor Thursday's
    whole_day = sunday_night(weekdays=[0], start="08:00", end="08:00", timezone="UTC")  # 2026-07-06 is a Monday
    assert minutes_active(whole_day, utc(2026, 7, 6, 8), hours=24) == 24 * 60
    assert not whole_day.active_at(utc(2026, 7, 7, 8, 0))


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("weekdays", [7], "0 \\(Monday\\) to 6"),
        ("weekdays", [], "at least 1"),
        ("start", "24:00", "HH:MM"),
        ("end", "2:00", "HH:MM"),
        ("timezone", "Mars/Olympus", "unknown IANA time zone"),
    ],
)
def test_maintenance_windows_refuse_bad_schedules(field: str, value: object, reason: str) -> None:
    spec = {"name": "x", "weekdays": [6], "start": "02:00", "end": "04:00", "timezone": "UTC", "created_by": "ana"}
    with pytest.raises(ValidationError, match=reason):
        MaintenanceWindowSpec.model_validate({**spec, field: value})


def test_the_store_keeps_everything_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "lifecycle.sqlite"
    store = lifecycle_store(path)
    store.save_silence(Silence(id="si-1", starts_at=0.0, ends_at=10.0, created_by="ana", created_at=0.0))
    store.save_window(sunday_night())
    store.save_acknowledgement(Acknowledgement(alert_id="al-1", by="ana", at=5.0, expires_at=65.0))
    assert store.mark_handled("al-1:firing:warning", 5.0)
    store.record_transition(alert(), 5.0)
    store.mark_notified("al-1", 6.0, repeat=True)
    events = [AlertEvent(event_id=f"ev-{i}", kind="fired", at=float(i), alert_id=f"al-{i % 2}") for i in range(5)]
    assert store.append_events(events) == events
    assert store.append_events(events[:2]) == []  # the same events again are not stored twice

    store = lifecycle_store(path)
    assert [s.id for s in store.silences()] == ["si-1"] and [w.id for w in store.windows()] == ["mw-1"]
    ack = store.acknowledgement("al-1")
    assert ack is not None and ack.expires_at == 65.0
    assert not store.mark_handled("al-1:firing:warning", 7.0)
    entry = store.entry("al-1")
    assert entry is not None and (entry.alert, entry.notified_at, entry.repeat_count) == (alert(), 6.0, 1)
    assert [e.event_id for e in store.events(limit=2)] == ["ev-3", "ev-4"]  # the newest, oldest first
    assert [e.event_id for e in store.events(since=1.0, alert_id="al-1")] == ["ev-1", "ev-3"]
