"""The alert-lifecycle API against the real AlertEngine, Notifier, sqlite stores, AlertDispatcher and journal, a real
API server and a real webhook receiver on 127.0.0.1 (no broker). The Notifier's wall clock is injected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from core import settings as settings_module
from core.contracts import Alert, AlertEvent, DeadLetter, Score
from core.settings import AlertGroup, AlertingSettings, ApiSettings, DeliverySettings, Settings
from operators.alerting import AlertEngine, SqliteAlertStateStore
from operators.delivery import AlertDispatcher, AlertHub
from operators.notifier import Notifier
from operators.outbound import OutboundPolicy
from operators.shared_state import SharedState
from operators.webhook_receiver import WebhookReceiver
from pipeline.alerting_service import AlertingService
from pipeline.cli import app as cli_app
from pipeline.subscriptions_api import serve_api

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "lifecycle-token"
SECRET = "a-shared-secret-of-some-length"
START = float(int(time.time()))  # near now: the CLI turns --duration into an end from its own clock
# One anomalous score fires, one normal score resolves: the engine's own timing is not what these tests are about.
QUICK = AlertingSettings(
    for_s=0, for_points=1, video_for_points=1, resolve_for_s=0, cooldown_s=0, group_wait_s=0, repeat_interval_s=None
)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@dataclass
class Lifecycle:
    engine: AlertEngine
    notifier: Notifier
    dispatcher: AlertDispatcher
    client: httpx.AsyncClient
    hook: WebhookReceiver
    clock: Clock
    base_url: str
    event_time: float = 1000.0

    def score(self, stream: str, value: float) -> list[Alert]:
        """One score of ``stream`` against threshold 1 (1.5: warning, 3: critical, 0.1: resolves), event time
        moving on; its transitions handed to the notifier."""
        self.event_time += 1
        score = Score(
            modality="sensor", stream=stream, event_time=self.event_time, score=value, threshold=1.0,
            is_anomaly=value >= 1.0, model="ts_diffusion", model_version="1",
        )  # fmt: skip
        alerts = self.engine.observe(score)
        for alert in alerts:
            self.notifier.handle(alert)
        return alerts

    async def delivered(self) -> list[tuple[str, str]]:
        await self.dispatcher.drain()
        return [(alert.stream, alert.state) for alert in self.hook.alerts]

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None


@asynccontextmanager
async def lifecycle(state_dir: Path, alerting: AlertingSettings = QUICK) -> AsyncIterator[Lifecycle]:
    settings = Settings(
        state_dir=state_dir,
        api=ApiSettings(port=0, token=TOKEN),
        delivery=DeliverySettings(backoff_base_s=0.01, backoff_jitter=0.0, allowed_targets=["127.0.0.1/32"]),
        alerting=alerting,
    )
    shared = SharedState.open(settings)
    subscriptions, store = shared.subscriptions, shared.lifecycle
    alert_state = SqliteAlertStateStore(state_dir / "alerts.sqlite")
    hub = AlertHub()
    dead_letters: list[DeadLetter] = []

    async def to_dead_letter(letter: DeadLetter) -> None:
        dead_letters.append(letter)

    dispatcher = AlertDispatcher(
        subscriptions, shared.journal, settings=settings.delivery, dead_letter=to_dead_letter,
        source_topic=settings.topics.alerts, external_url=settings.api.public_url(),
        outbound=OutboundPolicy.from_settings(settings),
    )  # fmt: skip
    await dispatcher.start()
    clock = Clock()
    notifier = Notifier(settings.alerting, store, dispatcher, clock)
    runner = await serve_api(settings, subscriptions, hub, dispatcher, notifier)
    host, port = runner.addresses[0][:2]
    base_url = f"http://{host}:{port}"
    hook = WebhookReceiver(SECRET)
    await hook.start()
    client = httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        rig = Lifecycle(AlertEngine(alerting, alert_state), notifier, dispatcher, client, hook, clock, base_url)
        body = {"name": "ops", "delivery": {"webhook_url": hook.url}, "secret": SECRET}
        await rig.ok("POST", "/v1/subscriptions", 201, json=body)
        yield rig
        assert dead_letters == []
    finally:
        await client.aclose()
        await hook.stop()
        await runner.cleanup()
        await dispatcher.stop()
        alert_state.close()
        shared.close()


async def test_every_lifecycle_route_needs_the_bearer_token(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig, httpx.AsyncClient(base_url=rig.base_url) as anonymous:
        for method, path in [
            ("GET", "/v1/alerts"),
            ("GET", "/v1/alerts/al-x"),
            ("POST", "/v1/alerts/al-x/ack"),
            ("DELETE", "/v1/alerts/al-x/ack"),
            ("GET", "/v1/silences"),
            ("POST", "/v1/silences"),
            ("DELETE", "/v1/silences/si-x"),
            ("GET", "/v1/maintenance-windows"),
            ("POST", "/v1/maintenance-windows"),
            ("DELETE", "/v1/maintenance-windows/mw-x"),
            ("GET", "/v1/events"),
        ]:
            assert (await anonymous.request(method, path)).status_code == 401, (method, path)


async def test_acknowledging_with_an_expiry_stops_escalations_then_notifies_again(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig:
        [fired] = rig.score("pump-1", 1.5)
        assert await rig.delivered() == [("pump-1", "firing")]
        [listed] = (await rig.ok("GET", "/v1/alerts"))["alerts"]
        assert (listed["alert_id"], listed["status"], listed["acknowledgement"]) == (fired.alert_id, "firing", None)

        body = {"by": "ana", "comment": "checking the pump", "expires_in_s": 600}
        acked = await rig.ok("POST", f"/v1/alerts/{fired.alert_id}/ack", json=body)
        assert acked["status"] == "acknowledged"
        assert acked["acknowledgement"] == {
            "alert_id": fired.alert_id, "by": "ana", "at": START, "comment": "checking the pump",
            "expires_at": START + 600,
        }  # fmt: skip
        [escalated] = rig.score("pump-1", 3.0)
        assert escalated.severity == "critical" and await rig.delivered() == [("pump-1", "firing")]

        rig.clock.now = START + 600
        rig.notifier.tick()
        view = await rig.ok("GET", f"/v1/alerts/{fired.alert_id}")
        assert view["status"] == "firing" and view["acknowledgement"] is None
        assert [e["kind"] for e in view["events"]] == ["fired", "acknowledged", "escalated", "ack_expired"]
        # the re-notification carries the alert's latest transition: the escalation held back while acknowledged
        assert await rig.delivered() == [("pump-1", "firing"), ("pump-1", "firing")]
        assert [a.severity for a in rig.hook.alerts] == ["warning", "critical"]

        assert (await rig.client.post("/v1/alerts/al-none/ack", json={"by": "ana"})).status_code == 404
        rig.score("pump-1", 0.1)
        resolved = await rig.client.post(f"/v1/alerts/{fired.alert_id}/ack", json={"by": "ana"})
        assert resolved.status_code == 409
        bad = await rig.client.post(f"/v1/alerts/{fired.alert_id}/ack", json={"by": "", "expires_in_s": -1})
        assert bad.status_code == 400 and len(bad.json()["reasons"]) == 2


async def test_unacknowledging_through_the_api(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig:
        [fired] = rig.score("pump-1", 1.5)
        await rig.ok("POST", f"/v1/alerts/{fired.alert_id}/ack", json={"by": "ana"})
        view = await rig.ok("DELETE", f"/v1/alerts/{fired.alert_id}/ack", params={"by": "bob"})
        assert view["status"] == "firing"
        events = (await rig.ok("GET", "/v1/events", params={"alert_id": fired.alert_id}))["events"]
        assert [(e["kind"], e["actor"]) for e in events] == [
            ("fired", "system"),
            ("acknowledged", "ana"),
            ("unacknowledged", "bob"),
        ]
        assert (await rig.client.delete("/v1/alerts/al-none/ack")).status_code == 404


async def test_a_silence_with_matchers_suppresses_delivery_records_the_resolve_and_expires(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig:
        body = {"matchers": {"stream": "pump-*", "severity": "warning"}, "ends_at": START + 3600, "created_by": "ana",
                "comment": "pump house maintenance"}  # fmt: skip
        silence = await rig.ok("POST", "/v1/silences", 201, json=body)
        assert silence["state"] == "active" and silence["starts_at"] == START and silence["id"].startswith("si-")

        [silenced] = rig.score("pump-1", 1.5)
        rig.score("fan-1", 1.5)  # another stream: the matchers do not take it
        view = await rig.ok("GET", f"/v1/alerts/{silenced.alert_id}")
        assert view["status"] == "silenced" and view["silenced_by"] == [silence["id"]]
        rig.score("pump-1", 0.1)
        assert await rig.delivered() == [("fan-1", "firing")]  # neither the firing nor the resolve of pump-1
        events = (await rig.ok("GET", "/v1/events", params={"alert_id": silenced.alert_id}))["events"]
        assert [(e["kind"], e["ref"]) for e in events] == [
            ("fired", None), ("suppressed", silence["id"]), ("resolved", None), ("suppressed", silence["id"])
        ]  # fmt: skip
        history = (await rig.ok("GET", "/v1/alerts", params={"status": "all"}))["alerts"]
        assert {(a["stream"], a["status"]) for a in history} == {("pump-1", "resolved"), ("fan-1", "firing")}

        rig.clock.now = START + 3600
        [expired] = rig.notifier.tick()
        assert (expired.kind, expired.ref) == ("silence_expired", silence["id"])
        assert (await rig.ok("GET", "/v1/silences", params={"state": "active"}))["silences"] == []
        [kept] = (await rig.ok("GET", "/v1/silences", params={"state": "expired"}))["silences"]
        assert kept["id"] == silence["id"]
        rig.score("pump-2", 1.5)
        assert await rig.delivered() == [("fan-1", "firing"), ("pump-2", "firing")]


async def test_ending_a_silence_early_and_bad_silences(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig:
        body = {"starts_at": START + 60, "ends_at": START + 120, "created_by": "ana"}
        pending = await rig.ok("POST", "/v1/silences", 201, json=body)
        assert pending["state"] == "pending"
        ended = await rig.ok("DELETE", f"/v1/silences/{pending['id']}", params={"by": "bob"})
        assert ended["state"] == "expired" and ended["ends_at"] == START
        assert [e["kind"] for e in (await rig.ok("GET", "/v1/events"))["events"]] == [
            "silence_created",
            "silence_expired",
        ]
        assert (await rig.client.delete("/v1/silences/si-none")).status_code == 404

        no_end = await rig.client.post("/v1/silences", json={"created_by": "ana"})
        assert no_end.status_code == 400 and any(r.startswith("ends_at") for r in no_end.json()["reasons"])
        backwards = await rig.client.post("/v1/silences", json={**body, "ends_at": START + 30})
        assert backwards.status_code == 400 and "ends_at must be after starts_at" in backwards.text
        past = await rig.client.post("/v1/silences", json={"ends_at": START - 1, "created_by": "ana"})
        assert past.status_code == 400 and "future" in past.text
        bad_matcher = await rig.client.post("/v1/silences", json={**body, "matchers": {"modality": "audio"}})
        assert bad_matcher.status_code == 400 and "matchers.modality" in bad_matcher.text
        assert (await rig.client.get("/v1/silences", params={"state": "later"})).status_code == 400


async def test_maintenance_windows_are_created_listed_applied_and_deleted(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig:
        rig.clock.now = 1_782_000_000.0  # Sunday 2026-06-21 00:00 UTC, 02:00 in Berlin
        body = {"name": "Sunday shutdown", "matchers": {"stream": "pump-*"}, "weekdays": [6], "start": "02:00",
                "end": "04:00", "timezone": "Europe/Berlin", "created_by": "ana"}  # fmt: skip
        window = await rig.ok("POST", "/v1/maintenance-windows", 201, json=body)
        [listed] = (await rig.ok("GET", "/v1/maintenance-windows"))["maintenance_windows"]
        assert listed == window and window["id"].startswith("mw-") and window["weekdays"] == [6]

        rig.score("pump-1", 1.5)
        assert await rig.delivered() == []
        rig.clock.now += 2 * 3600  # 04:00 in Berlin: over, and pump-1 still fires
        rig.notifier.tick()
        assert await rig.delivered() == [("pump-1", "firing")]

        assert (await rig.client.delete(f"/v1/maintenance-windows/{window['id']}")).status_code == 204
        assert (await rig.client.delete(f"/v1/maintenance-windows/{window['id']}")).status_code == 404
        assert (await rig.ok("GET", "/v1/maintenance-windows"))["maintenance_windows"] == []
        kinds = [e["kind"] for e in (await rig.ok("GET", "/v1/events"))["events"]]
        assert kinds == ["maintenance_window_created", "fired", "suppressed", "maintenance_window_deleted"]

        wrong = await rig.client.post(
            "/v1/maintenance-windows", json={**body, "timezone": "Nowhere/City", "start": "2"}
        )
        assert wrong.status_code == 400 and len(wrong.json()["reasons"]) == 2


async def test_a_maintenance_window_in_berlin_keeps_its_local_hours_across_both_dst_changes(tmp_path: Path) -> None:
    """Sunday 02:00-04:00 Europe/Berlin: 60 min of UTC on the spring-forward Sunday (02:00-03:00 does not exist),
    180 min on the fall-back Sunday (02:00-03:00 happens twice), 120 min on an ordinary one."""
    async with lifecycle(tmp_path) as rig:
        body = {"name": "Sunday shutdown", "matchers": {"stream": "pump-*"}, "weekdays": [6], "start": "02:00",
                "end": "04:00", "timezone": "Europe/Berlin", "created_by": "ana"}  # fmt: skip
        await rig.ok("POST", "/v1/maintenance-windows", 201, json=body)
        spring, autumn = 1_774_742_400.0, 1_792_886_400.0  # 2026-03-29 and 2026-10-25, 00:00 UTC
        hour = 3600.0
        cases = [
            ("pump-spring-before", spring + 0.5 * hour, False),  # 01:30 CET
            ("pump-spring-in", spring + 1.5 * hour, True),  # 03:30 CEST
            ("pump-spring-after", spring + 2.5 * hour, False),  # 04:30 CEST
            ("pump-autumn-in-first", autumn + 0.5 * hour, True),  # 02:30 CEST
            ("pump-autumn-in-second", autumn + 1.5 * hour, True),  # 02:30 CET, the same wall time again
            ("pump-autumn-in-last", autumn + 2.5 * hour, True),  # 03:30 CET
            ("pump-autumn-after", autumn + 3.5 * hour, False),  # 04:30 CET
        ]
        for stream, wall_time, _ in cases:
            rig.clock.now = wall_time
            rig.score(stream, 1.5)
        delivered = {stream for stream, _ in await rig.delivered()}
        assert delivered == {stream for stream, _, silenced in cases if not silenced}
        suppressed = {e["stream"] for e in (await rig.ok("GET", "/v1/events"))["events"] if e["kind"] == "suppressed"}
        assert suppressed == {stream for stream, _, silenced in cases if silenced}


async def test_one_group_within_group_wait_is_one_webhook_and_a_firing_alert_repeats(tmp_path: Path) -> None:
    """Through the real dispatcher, journal and receiver: two streams of one group in one request, then a repeat
    of both after repeat_interval_s with a new idempotency key, then nothing more once both resolved."""
    grouped = QUICK.model_copy(
        update={
            "group_wait_s": 30.0,
            "repeat_interval_s": 600.0,
            "groups": [AlertGroup(name="pump-house", stream="pump-*")],
        }
    )
    async with lifecycle(tmp_path, grouped) as rig:
        rig.score("pump-1", 1.5)
        rig.clock.now += 10
        rig.score("pump-2", 3.0)
        rig.notifier.tick()
        assert await rig.delivered() == []  # the group still waits
        rig.clock.now = START + 30
        rig.notifier.tick()
        assert await rig.delivered() == [("pump-1", "firing"), ("pump-2", "firing")]
        [first] = rig.hook.notifications
        assert (first.group, first.reason) == ("pump-house", "transition")

        rig.clock.now = START + 30 + 600
        rig.notifier.tick()
        await rig.dispatcher.drain()
        assert [(n.reason, sorted(a.stream for a in n.alerts)) for n in rig.hook.notifications] == [
            ("transition", ["pump-1", "pump-2"]),
            ("repeat", ["pump-1", "pump-2"]),
        ]
        assert len(set(rig.hook.keys)) == 2 and rig.hook.counts.duplicates == 0
        rig.notifier.tick()  # the same instant again: no second repeat
        rig.score("pump-1", 0.1)
        rig.score("pump-2", 0.1)
        rig.clock.now += 30
        rig.notifier.tick()
        rig.clock.now += 3 * 600
        rig.notifier.tick()
        await rig.dispatcher.drain()
        assert [n.reason for n in rig.hook.notifications] == ["transition", "repeat", "transition"]
        assert sorted((a.stream, a.state) for a in rig.hook.notifications[-1].alerts) == [
            ("pump-1", "resolved"),
            ("pump-2", "resolved"),
        ]


async def test_events_by_time_and_limit_and_bad_queries(tmp_path: Path) -> None:
    async with lifecycle(tmp_path) as rig:
        for stream in ("a", "b", "c"):
            rig.score(stream, 1.5)
            rig.clock.now += 10
        streams = [e["stream"] for e in (await rig.ok("GET", "/v1/events", params={"since": START + 10}))["events"]]
        assert streams == ["b", "c"]
        assert [e["stream"] for e in (await rig.ok("GET", "/v1/events", params={"limit": 1}))["events"]] == ["c"]
        for query in ({"since": "soon"}, {"since": "nan"}, {"limit": "0"}, {"limit": "many"}):
            assert (await rig.client.get("/v1/events", params=query)).status_code == 400, query
        assert (await rig.client.get("/v1/alerts", params={"status": "open"})).status_code == 400


async def test_the_cli_acknowledges_silences_and_schedules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with lifecycle(tmp_path) as rig:
        [fired] = rig.score("pump-1", 1.5)
        monkeypatch.setenv("DIFFSENTRY_API__TOKEN", TOKEN)
        settings_module.get_settings.cache_clear()
        runner = CliRunner()

        async def cli(*args: str) -> str:  # in a thread: the API server runs on this loop
            result = await asyncio.to_thread(runner.invoke, cli_app, [*args, "--api-url", rig.base_url])
            assert result.exit_code == 0, result.output
            return result.output

        assert fired.alert_id in await cli("alerts", "list")
        await cli("alerts", "ack", fired.alert_id, "--by", "ana", "--comment", "seen", "--expires-in", "15m")
        view = rig.notifier.view(fired.alert_id)
        assert view is not None and view.acknowledgement is not None
        assert view.acknowledgement.expires_at == START + 900 and view.acknowledgement.comment == "seen"
        assert "acknowledged" in await cli("alerts", "list")
        await cli("alerts", "unack", fired.alert_id, "--by", "ana")
        assert rig.notifier.view(fired.alert_id).status == "firing"  # type: ignore[union-attr]

        await cli("silences", "add", "--stream", "fan-*", "--severity", "critical", "--duration", "2h", "--by", "ana")
        [silence] = rig.notifier.silences()
        assert (silence.matchers.stream, silence.matchers.severity) == ("fan-*", "critical")
        assert abs(silence.ends_at - (time.time() + 7200)) < 60
        assert silence.id in await cli("silences", "list")
        await cli("silences", "expire", silence.id)
        assert rig.notifier.silences()[0].state_at(rig.clock.now) == "expired"

        await cli("maintenance", "add", "Sunday shutdown", "--weekdays", "6", "--start", "02:00", "--end", "04:00",
            "--timezone", "Europe/Berlin", "--stream", "pump-*", "--by", "ana")  # fmt: skip
        [window] = rig.notifier.maintenance_windows()
        assert (window.weekdays, window.timezone, window.matchers.stream) == ([6], "Europe/Berlin", "pump-*")
        assert "Sunday shutdown" in await cli("maintenance", "list")
        await cli("maintenance", "delete", window.id)
        assert rig.notifier.maintenance_windows() == []

        refused = await asyncio.to_thread(runner.invoke, cli_app, ["silences", "add", "--by", "ana"])
        assert refused.exit_code != 0 and "--duration or --ends-at" in refused.output
        settings_module.get_settings.cache_clear()


async def test_the_alerting_service_publishes_every_event_and_its_ticks_flush_groups(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path,
        api=ApiSettings(port=0, token=TOKEN),
        delivery=DeliverySettings(allowed_targets=["127.0.0.1/32"]),
        alerting=QUICK.model_copy(update={"group_wait_s": 0.5}),
    )
    published: list[AlertEvent] = []

    async def publish_event(event: AlertEvent) -> None:
        published.append(event)

    async def no_dead_letters(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    hook = WebhookReceiver(SECRET)
    await hook.start()
    service = await AlertingService.start(settings, dead_letter=no_dead_letters, publish_event=publish_event)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(base_url=service.api_url, headers=auth) as client:
            body = {"name": "ops", "delivery": {"webhook_url": hook.url}, "secret": SECRET}
            assert (await client.post("/v1/subscriptions", json=body)).status_code == 201
            score = Score(
                modality="sensor", stream="pump-1", event_time=10.0, score=1.5, threshold=1.0, is_anomaly=True,
                model="ts_diffusion", model_version="1",
            )  # fmt: skip
            [fired] = service.observe(score)
            assert hook.alerts == []  # waiting in its group
            acked = await client.post(f"/v1/alerts/{fired.alert_id}/ack", json={"by": "ana"})
            assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
            assert await asyncio.wait_for(hook.wait_for(1), 10) == [fired]  # the timer flushed the group
        deadline = time.monotonic() + 10
        while len(published) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [(e.kind, e.alert_id) for e in published] == [
            ("fired", fired.alert_id),
            ("acknowledged", fired.alert_id),
        ]
    finally:
        await service.stop()
        await hook.stop()
