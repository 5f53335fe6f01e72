"""The Notifier with an injected wall clock, a real sqlite LifecycleStore and a sink that records."""

from collections.abc import Callable
from pathlib import Path

import pytest

from core.contracts import Alert, AlertEvent, Notification, Severity
from core.settings import AlertGroup, AlertingSettings
from operators.alerting import idempotency_key
from operators.lifecycle import MaintenanceWindowSpec, Matchers, SilenceSpec
from operators.notifier import AlertAlreadyResolved, Notifier, UnknownAlert, notification_id
from tests.state import lifecycle_store


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class RecordingSink:
    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    def submit(self, notification: Notification) -> int:
        self.notifications.append(notification)
        return 1

    def delivered(self) -> list[tuple[str, list[str]]]:
        """(reason, the idempotency keys of its alerts) of each notification so far."""
        return [(n.reason, [idempotency_key(a) for a in n.alerts]) for n in self.notifications]


def alert(
    stream: str = "pump-1", state: str = "firing", severity: Severity = "warning", alert_id: str | None = None
) -> Alert:
    return Alert(
        alert_id=alert_id or f"al-{stream}", modality="sensor", stream=stream, state=state,  # type: ignore[arg-type]
        severity=severity, started_at=100.0, event_time=120.0, score=2.0, threshold=1.0, model="ts_diffusion",
    )  # fmt: skip


class Rig:
    def __init__(self, path: Path, settings: AlertingSettings, clock: Clock) -> None:
        self.path, self.settings, self.clock = path, settings, clock
        self.sink = RecordingSink()
        self.published: list[AlertEvent] = []
        self.store = lifecycle_store(path)
        self.notifier = Notifier(settings, self.store, self.sink, clock, on_events=self.published.extend)

    def restart(self) -> None:
        self.store = lifecycle_store(self.path)
        self.notifier = Notifier(self.settings, self.store, self.sink, self.clock, on_events=self.published.extend)

    def kinds(self) -> list[str]:
        return [event.kind for event in self.notifier.events(limit=1000)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_rig(tmp_path: Path, clock: Clock) -> Callable[..., Rig]:
    def make(**settings: object) -> Rig:
        return Rig(tmp_path / "lifecycle.sqlite", AlertingSettings.model_validate(settings), clock)

    return make


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig(group_wait_s=0.0, repeat_interval_s=None)


def test_a_transition_is_notified_at_once_without_group_wait_and_logged_as_an_event(rig: Rig) -> None:
    events = rig.notifier.handle(alert())
    assert [e.kind for e in events] == ["fired"] and rig.published == events
    assert rig.sink.delivered() == [("transition", ["al-pump-1:firing:warning"])]
    assert rig.notifier.handle(alert(severity="critical"))[0].kind == "escalated"
    assert rig.notifier.handle(alert(state="resolved", severity="critical"))[0].kind == "resolved"
    assert rig.kinds() == ["fired", "escalated", "resolved"] and len(rig.sink.notifications) == 3


def test_streams_of_one_group_within_group_wait_go_out_as_one_notification(
    make_rig: Callable[..., Rig], clock: Clock
) -> None:
    groups = [AlertGroup(name="pump-house", stream="pump-*")]
    rig = make_rig(group_wait_s=30.0, repeat_interval_s=None, groups=groups)
    rig.notifier.handle(alert("pump-1"))
    clock.advance(10)
    rig.notifier.handle(alert("pump-2"))
    rig.notifier.handle(alert("fan-1"))  # in no group: a group of its own
    assert rig.notifier.tick() == [] and rig.sink.notifications == []
    clock.advance(20)  # 30 s after pump-1: the pump house goes out; fan-1 has waited only 20 s
    rig.notifier.tick()
    [house] = rig.sink.notifications
    assert house.group == "pump-house" and [a.stream for a in house.alerts] == ["pump-1", "pump-2"]
    assert house.notification_id == notification_id("pump-house", "transition", house.alerts)
    clock.advance(10)
    rig.notifier.tick()
    assert [(n.group, len(n.alerts)) for n in rig.sink.notifications] == [("pump-house", 2), ("sensor/fan-1", 1)]
    rig.notifier.tick()
    assert len(rig.sink.notifications) == 2  # sent once


def test_a_still_firing_alert_repeats_after_repeat_interval_until_it_resolves(
    make_rig: Callable[..., Rig], clock: Clock
) -> None:
    rig = make_rig(group_wait_s=0.0, repeat_interval_s=600.0)
    rig.notifier.handle(alert())
    clock.advance(599)
    assert rig.notifier.tick() == []
    clock.advance(1)
    [repeated] = rig.notifier.tick()
    assert repeated.kind == "repeated" and repeated.ref == rig.sink.notifications[-1].notification_id
    clock.advance(300)
    rig.notifier.tick()
    clock.advance(300)
    rig.notifier.tick()
    reasons = [n.reason for n in rig.sink.notifications]
    assert reasons == ["transition", "repeat", "repeat"]
    assert len({n.notification_id for n in rig.sink.notifications}) == 3  # each repeat is a new notification
    rig.notifier.handle(alert(state="resolved"))
    clock.advance(3600)
    rig.notifier.tick()
    assert [n.reason for n in rig.sink.notifications] == [*reasons, "transition"]


def test_an_acknowledgement_stops_escalations_and_repeats_but_not_the_resolve(
    make_rig: Callable[..., Rig], clock: Clock
) -> None:
    rig = make_rig(group_wait_s=0.0, repeat_interval_s=600.0)
    rig.notifier.handle(alert())
    view = rig.notifier.acknowledge("al-pump-1", by="ana", comment="on it")
    assert view.status == "acknowledged" and view.acknowledgement is not None and view.acknowledgement.by == "ana"
    rig.notifier.handle(alert(severity="critical"))
    clock.advance(3600)
    rig.notifier.tick()
    assert rig.sink.delivered() == [("transition", ["al-pump-1:firing:warning"])]  # no escalation, no repeat
    rig.notifier.handle(alert(state="resolved", severity="critical"))
    assert rig.sink.delivered()[-1] == ("transition", ["al-pump-1:resolved:critical"])
    assert rig.kinds() == ["fired", "acknowledged", "escalated", "resolved"]
    with pytest.raises(AlertAlreadyResolved):
        rig.notifier.acknowledge("al-pump-1", by="ana")
    with pytest.raises(UnknownAlert):
        rig.notifier.acknowledge("al-nope", by="ana")


def test_an_expiring_acknowledgement_notifies_again_if_the_alert_still_fires(rig: Rig, clock: Clock) -> None:
    rig.notifier.handle(alert("pump-1"))
    rig.notifier.handle(alert("pump-2"))
    rig.notifier.acknowledge("al-pump-1", by="ana", expires_in_s=900)
    rig.notifier.acknowledge("al-pump-2", by="ana", expires_in_s=900)
    rig.notifier.handle(alert("pump-2", state="resolved"))
    clock.advance(899)
    rig.notifier.tick()
    assert [n.reason for n in rig.sink.notifications] == ["transition", "transition", "transition"]
    clock.advance(1)
    [expired] = rig.notifier.tick()  # pump-2 resolved meanwhile: its acknowledgement just ends
    assert (expired.kind, expired.alert_id, expired.until) == ("ack_expired", "al-pump-1", clock.now)
    assert rig.sink.delivered()[-1] == ("ack_expired", ["al-pump-1:firing:warning"])
    view = rig.notifier.view("al-pump-1")
    assert view is not None and view.status == "firing" and view.acknowledgement is None
    rig.notifier.tick()
    assert len(rig.sink.notifications) == 4


def test_unacknowledging_lets_escalations_through_again(rig: Rig) -> None:
    rig.notifier.handle(alert())
    rig.notifier.acknowledge("al-pump-1", by="ana")
    assert rig.notifier.unacknowledge("al-pump-1", by="ana").status == "firing"
    rig.notifier.handle(alert(severity="critical"))
    assert rig.sink.delivered()[-1] == ("transition", ["al-pump-1:firing:critical"])
    assert rig.kinds() == ["fired", "acknowledged", "unacknowledged", "escalated"]


def test_a_silenced_transition_is_recorded_not_delivered_and_so_is_its_resolve(rig: Rig, clock: Clock) -> None:
    silence = rig.notifier.create_silence(
        SilenceSpec(matchers=Matchers(stream="pump-*"), ends_at=clock.now + 3600, created_by="ana", comment="works")
    )
    rig.notifier.handle(alert("pump-1"))
    rig.notifier.handle(alert("fan-1"))
    view = rig.notifier.view("al-pump-1")
    assert view is not None and view.status == "silenced" and view.silenced_by == [silence.id]
    clock.advance(60)
    rig.notifier.handle(alert("pump-1", state="resolved"))
    rig.notifier.tick()
    assert rig.sink.delivered() == [("transition", ["al-fan-1:firing:warning"])]
    pump_events = [(e.kind, e.ref) for e in rig.notifier.events(alert_id="al-pump-1")]
    assert pump_events == [("fired", None), ("suppressed", silence.id), ("resolved", None), ("suppressed", silence.id)]


def test_a_silence_expiry_is_an_event_and_an_alert_still_firing_is_then_notified(rig: Rig, clock: Clock) -> None:
    silence = rig.notifier.create_silence(SilenceSpec(ends_at=clock.now + 600, created_by="ana"))
    rig.notifier.handle(alert())
    clock.advance(599)
    assert rig.notifier.tick() == [] and rig.sink.notifications == []
    clock.advance(1)
    [expired] = rig.notifier.tick()
    assert (expired.kind, expired.ref, expired.until) == ("silence_expired", silence.id, clock.now)
    assert rig.sink.delivered() == [("transition", ["al-pump-1:firing:warning"])]
    assert rig.notifier.tick() == [] and len(rig.sink.notifications) == 1  # announced once, sent once


def test_ending_a_silence_early_keeps_it_in_history(rig: Rig, clock: Clock) -> None:
    silence = rig.notifier.create_silence(SilenceSpec(ends_at=clock.now + 600, created_by="ana"))
    clock.advance(10)
    ended = rig.notifier.expire_silence(silence.id, by="bob")
    assert ended is not None and ended.ends_at == clock.now and ended.state_at(clock.now) == "expired"
    assert rig.notifier.expire_silence(silence.id, by="bob") == ended  # ending it again changes nothing
    clock.advance(600)
    rig.notifier.tick()
    assert rig.kinds() == ["silence_created", "silence_expired"]
    assert [s.id for s in rig.notifier.silences()] == [silence.id]
    clock.advance(1)
    pending = rig.notifier.create_silence(SilenceSpec(starts_at=clock.now + 60, ends_at=clock.now + 90, created_by="a"))
    assert rig.notifier.expire_silence(pending.id, by="bob") is not None  # ended before it began
    assert [s.state_at(clock.now) for s in rig.notifier.silences()] == ["expired", "expired"]
    with pytest.raises(ValueError, match="future"):
        rig.notifier.create_silence(SilenceSpec(ends_at=clock.now - 1, created_by="ana"))


def test_a_maintenance_window_suppresses_transitions_while_it_is_on(rig: Rig, clock: Clock) -> None:
    clock.now = 1_782_000_000.0  # 2026-06-21, a Sunday, 00:00 UTC: 02:00 in Berlin
    window = rig.notifier.create_maintenance_window(
        MaintenanceWindowSpec(
            name="shutdown", weekdays=[6], start="02:00", end="04:00", timezone="Europe/Berlin", created_by="ana"
        )
    )
    rig.notifier.handle(alert("pump-1"))
    clock.advance(2 * 3600)  # 04:00 in Berlin: the window is over
    rig.notifier.handle(alert("pump-2"))
    assert rig.sink.delivered()[0] == ("transition", ["al-pump-2:firing:warning"])
    rig.notifier.tick()  # pump-1 still fires and nothing silences it now: it is notified
    assert rig.sink.delivered()[1] == ("transition", ["al-pump-1:firing:warning"])
    assert rig.notifier.delete_maintenance_window(window.id, by="ana")
    assert not rig.notifier.delete_maintenance_window(window.id, by="ana")
    assert rig.kinds()[:3] == ["maintenance_window_created", "fired", "suppressed"]
    assert rig.kinds()[-1] == "maintenance_window_deleted"


def test_a_redelivered_transition_after_a_restart_changes_nothing(make_rig: Callable[..., Rig], clock: Clock) -> None:
    rig = make_rig(group_wait_s=30.0, repeat_interval_s=None)
    rig.notifier.handle(alert())
    rig.restart()  # before the group was sent: the pending transition survives
    assert rig.notifier.handle(alert()) == []
    clock.advance(30)
    rig.notifier.tick()
    rig.restart()
    assert rig.notifier.handle(alert()) == []
    rig.notifier.tick()
    assert rig.sink.delivered() == [("transition", ["al-pump-1:firing:warning"])]
    assert rig.kinds() == ["fired"] and [e.kind for e in rig.published] == ["fired"]


def test_views_list_active_alerts_newest_first_and_all_with_resolved(rig: Rig, clock: Clock) -> None:
    rig.notifier.handle(alert("pump-1"))
    clock.advance(1)
    rig.notifier.handle(alert("pump-2"))
    clock.advance(1)
    rig.notifier.handle(alert("pump-1", state="resolved"))
    assert [v.stream for v in rig.notifier.views("active")] == ["pump-2"]
    assert [(v.stream, v.status) for v in rig.notifier.views("all")] == [("pump-1", "resolved"), ("pump-2", "firing")]
