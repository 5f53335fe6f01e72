"""Subscriptions API, webhook delivery of notifications and the SSE stream against real HTTP servers on 127.0.0.1
(no broker)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from typer.testing import CliRunner

from core import settings as settings_module
from core.contracts import Alert, DeadLetter, Notification, Score, Severity, decode
from core.settings import AlertingSettings, ApiSettings, DeliverySettings, Settings, TritonSettings
from operators.alerting import AlertEngine, idempotency_key
from operators.delivery import AlertDispatcher, AlertHub
from operators.notifications import transition_notification
from operators.outbound import OutboundPolicy
from operators.shared_state import SharedState
from operators.subscriptions import SubscriptionStore
from operators.webhook_receiver import WebhookReceiver
from pipeline.alerting_service import AlertingService
from pipeline.cli import app as cli_app
from pipeline.subscriptions_api import serve_api
from tests.state import subscription_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TOKEN = "integration-token"
SECRET = "a-shared-secret-of-some-length"
# The receivers of these tests listen on loopback, which the outbound policy admits only when allowed.
FAST_RETRIES = DeliverySettings(
    concurrency=4,
    timeout_s=5.0,
    max_attempts=3,
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    backoff_jitter=0.0,
    allowed_targets=["127.0.0.1/32"],
)


@dataclass
class Service:
    """What `diffsentry run` wires together: the shared state's stores, hub, dispatcher, API server."""

    store: SubscriptionStore
    dispatcher: AlertDispatcher
    hub: AlertHub
    client: httpx.AsyncClient
    dead_letters: list[DeadLetter]

    def submit(self, transition: Alert) -> int:
        """What the alerting service does with an alert transition until grouping: one notification of it."""
        return self.dispatcher.submit(transition_notification(transition))

    async def subscribe(self, url: str, secret: str | None = SECRET, **selector: str) -> dict[str, object]:
        body: dict[str, object] = {"name": "test", "selector": selector, "delivery": {"webhook_url": url}}
        if secret is not None:
            body["secret"] = secret
        response = await self.client.post("/v1/subscriptions", json=body)
        assert response.status_code == 201, response.text
        return response.json()


@asynccontextmanager
async def service(
    state_dir: Path, delivery: DeliverySettings = FAST_RETRIES, triton: TritonSettings | None = None
) -> AsyncIterator[Service]:
    settings = Settings(
        state_dir=state_dir,
        api=ApiSettings(port=0, token=TOKEN),
        delivery=delivery,
        triton=triton or TritonSettings(),
    )
    shared = SharedState.open(settings)
    store = shared.subscriptions
    hub = AlertHub()
    dead_letters: list[DeadLetter] = []

    async def to_dead_letter(letter: DeadLetter) -> None:
        dead_letters.append(letter)

    dispatcher = AlertDispatcher(
        store,
        shared.journal,
        settings=settings.delivery,
        dead_letter=to_dead_letter,
        source_topic=settings.topics.alerts,
        external_url=settings.api.public_url(),
        outbound=OutboundPolicy.from_settings(settings),
    )
    await dispatcher.start()
    runner = await serve_api(settings, store, hub, dispatcher)
    host, port = runner.addresses[0][:2]
    client = httpx.AsyncClient(base_url=f"http://{host}:{port}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        yield Service(store, dispatcher, hub, client, dead_letters)
    finally:
        await client.aclose()
        await runner.cleanup()
        await dispatcher.stop()
        shared.close()


@asynccontextmanager
async def receiver(secret: str = SECRET, fail_first: int = 0) -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver(secret, fail_first=fail_first)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def alert(stream: str = "pump-1", severity: Severity = "warning", state: str = "firing") -> Alert:
    return Alert(
        alert_id="al-0123456789abcdef0123",
        modality="sensor",
        stream=stream,
        state=state,  # type: ignore[arg-type]
        severity=severity,
        started_at=100.0,
        event_time=110.0,
        score=1.7,
        threshold=1.0,
        model="ts_diffusion",
        top_channels=["Pressure", "Current"],
    )


async def test_every_v1_route_needs_the_bearer_token(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        base = str(svc.client.base_url)
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/healthz")).status_code == 200
            for method, path in [
                ("GET", "/v1/subscriptions"),
                ("POST", "/v1/subscriptions"),
                ("DELETE", "/v1/subscriptions/sub-x"),
                ("GET", "/v1/alerts/stream"),
                ("GET", "/v1/deliveries"),
            ]:
                response = await anonymous.request(method, path)
                assert response.status_code == 401, (method, path)
                assert response.headers["WWW-Authenticate"] == "Bearer"
            wrong = await anonymous.get("/v1/subscriptions", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401


async def test_crud_through_the_api_never_returns_the_secret(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        created = await svc.subscribe("http://127.0.0.1:9/hook", secret=None, stream="pump-*")
        secret = created["secret"]
        assert isinstance(secret, str) and len(secret) >= 32
        sub_id = created["id"]

        listed = await svc.client.get("/v1/subscriptions")
        got = await svc.client.get(f"/v1/subscriptions/{sub_id}")
        for response in (listed, got):
            assert response.status_code == 200 and secret not in response.text and '"secret"' not in response.text
        assert got.json()["has_secret"] is True
        assert [s["id"] for s in listed.json()["subscriptions"]] == [sub_id]

        patched = await svc.client.patch(f"/v1/subscriptions/{sub_id}", json={"selector": {"min_severity": "critical"}})
        assert patched.status_code == 200
        assert patched.json()["selector"] == {"stream": "pump-*", "modality": None, "min_severity": "critical"}

        replaced = await svc.client.put(
            f"/v1/subscriptions/{sub_id}",
            json={"name": "renamed", "delivery": {"webhook_url": "http://127.0.0.1:9/other", "sse": True}},
        )
        assert replaced.status_code == 200
        assert replaced.json()["name"] == "renamed" and replaced.json()["selector"]["stream"] == "*"
        assert svc.store.get(sub_id).secret == secret  # type: ignore[union-attr]

        invalid = await svc.client.patch(f"/v1/subscriptions/{sub_id}", json={"selector": {"min_severity": "panic"}})
        assert invalid.status_code == 400 and "min_severity" in invalid.text
        unknown_field = await svc.client.post(
            "/v1/subscriptions", json={"name": "x", "delivery": {"sse": True}, "y": 1}
        )
        assert unknown_field.status_code == 400 and "y" in unknown_field.json()["reasons"][0]
        malformed = await svc.client.post("/v1/subscriptions", content=b"{nope", headers={"Content-Type": "x"})
        assert malformed.status_code == 400 and "malformed JSON" in malformed.text
        no_channel = await svc.client.post("/v1/subscriptions", json={"name": "x", "delivery": {}})
        assert no_channel.status_code == 400

        assert (await svc.client.delete(f"/v1/subscriptions/{sub_id}")).status_code == 204
        assert (await svc.client.get(f"/v1/subscriptions/{sub_id}")).status_code == 404
        assert (await svc.client.delete(f"/v1/subscriptions/{sub_id}")).status_code == 404
        assert (await svc.client.patch("/v1/subscriptions/sub-none", json={"name": "x"})).status_code == 404


async def test_subscriptions_survive_a_restart_and_keep_signing_with_their_secret(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, receiver() as hook:
        created = await svc.subscribe(hook.url, stream="pump-*")
    async with service(tmp_path) as svc, receiver() as hook:
        listed = (await svc.client.get("/v1/subscriptions")).json()["subscriptions"]
        assert [s["id"] for s in listed] == [created["id"]]
        await svc.client.patch(f"/v1/subscriptions/{created['id']}", json={"delivery": {"webhook_url": hook.url}})
        assert svc.submit(alert()) == 1
        await svc.dispatcher.drain()
        assert hook.alerts == [alert()] and hook.counts.bad_signatures == 0


async def test_a_receiver_failing_twice_gets_the_alert_on_the_third_attempt(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, receiver(fail_first=2) as hook:
        await svc.subscribe(hook.url)
        assert svc.submit(alert()) == 1
        await svc.dispatcher.drain()
        assert hook.alerts == [alert()]
        assert hook.counts.injected_failures == 2 and hook.counts.requests == 3
        assert hook.keys == [transition_notification(alert()).notification_id]
        assert svc.dead_letters == []
        summary = (await svc.client.get("/v1/deliveries")).json()["summary"]
        assert summary["delivered"] == 1 and summary["attempts"] == 3 and summary["dead_lettered"] == 0

        assert svc.submit(alert()) == 0  # the same transition again: journalled, not re-sent
        assert svc.submit(alert(state="resolved")) == 1
        await svc.dispatcher.drain()
        assert [a.state for a in hook.alerts] == ["firing", "resolved"]


async def test_a_receiver_that_always_fails_sends_the_alert_to_the_dead_letter_sink(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, receiver(fail_first=1000) as hook:
        created = await svc.subscribe(hook.url)
        svc.submit(alert())
        await svc.dispatcher.drain()
        assert hook.counts.requests == FAST_RETRIES.max_attempts
        (letter,) = svc.dead_letters
        assert letter.reason == f"subscription {created['id']}: webhook {hook.url} failed after 3 attempt(s): HTTP 503"
        assert letter.error_type == "WebhookDeliveryFailed" and letter.source_topic == Settings().topics.alerts
        assert decode(Notification, letter.payload).alerts == [alert()] and letter.key == "sensor/pump-1"
        assert svc.dispatcher.summary()["dead_lettered"] == 1


async def test_a_rejected_signature_is_not_retried(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, receiver(secret="the-receiver-expects-another-secret") as hook:
        await svc.subscribe(hook.url)
        svc.submit(alert())
        await svc.dispatcher.drain()
        assert hook.counts.bad_signatures == 1 and hook.counts.requests == 1
        (letter,) = svc.dead_letters
        assert letter.reason.endswith("failed after 1 attempt(s): HTTP 401")


async def test_an_unreachable_receiver_is_retried_then_dead_lettered(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with service(tmp_path) as svc:
        await svc.subscribe(f"http://127.0.0.1:{closed_port}/")
        svc.submit(alert())
        await svc.dispatcher.drain()
        (letter,) = svc.dead_letters
        assert "failed after 3 attempt(s): ConnectError" in letter.reason


async def test_deliveries_left_pending_resume_after_a_restart(tmp_path: Path) -> None:
    slow_retries = FAST_RETRIES.model_copy(update={"backoff_base_s": 600.0, "backoff_max_s": 600.0})
    async with service(tmp_path, slow_retries) as svc, receiver(fail_first=1000) as down:
        created = await svc.subscribe(down.url)
        svc.submit(alert())
        while down.counts.requests < 1:
            await asyncio.sleep(0.01)
        # The worker stops while the delivery waits for its retry.
    async with service(tmp_path) as svc, receiver() as up:
        assert svc.dispatcher.summary()["pending"] == 1
        await svc.client.patch(f"/v1/subscriptions/{created['id']}", json={"delivery": {"webhook_url": up.url}})
        await svc.dispatcher.stop()
        assert await svc.dispatcher.start() == 1
        await svc.dispatcher.drain()
        assert up.alerts == [alert()]
        assert svc.dispatcher.summary() | {"attempts": 0} == {
            "pending": 0,
            "delivered": 1,
            "dead_lettered": 0,
            "cancelled": 0,
            "attempts": 0,
        }


async def next_event(lines: AsyncIterator[str]) -> list[str]:
    """The lines of the next server-sent event (events end with a blank line)."""
    event = []
    async for line in lines:
        if not line:
            return event
        event.append(line)
    raise AssertionError("the stream ended")


async def test_sse_stream_pushes_only_matching_alerts(tmp_path: Path) -> None:
    async with service(tmp_path) as svc:
        sse_only = await svc.client.post(
            "/v1/subscriptions",
            json={"name": "wall", "selector": {"min_severity": "critical"}, "delivery": {"sse": True}},
        )
        for query in ({"stream": "pump-*"}, {"subscription": sse_only.json()["id"]}):
            async with svc.client.stream("GET", "/v1/alerts/stream", params=query) as response:
                assert response.status_code == 200
                assert response.headers["Content-Type"].startswith("text/event-stream")
                lines = response.aiter_lines()
                assert await next_event(lines) == [": connected"]
                svc.hub.publish(alert(stream="fan-1"))
                svc.hub.publish(alert(stream="pump-2", severity="critical"))
                event = await next_event(lines)
            expected = alert(stream="pump-2", severity="critical")
            assert event[:2] == [f"id: {idempotency_key(expected)}", "event: alert"]
            assert decode(Alert, event[2].removeprefix("data: ")) == expected
        bad = await svc.client.get("/v1/alerts/stream", params={"min_severity": "panic"})
        assert bad.status_code == 400
        assert (await svc.client.get("/v1/alerts/stream", params={"subscription": "sub-none"})).status_code == 404
        webhook_only = await svc.subscribe("http://127.0.0.1:9/")
        not_sse = await svc.client.get("/v1/alerts/stream", params={"subscription": webhook_only["id"]})
        assert not_sse.status_code == 409


async def test_stopping_the_server_ends_open_sse_streams(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, api=ApiSettings(port=0, token=TOKEN))

    async def no_dead_letters(letter: DeadLetter) -> None:
        raise AssertionError(letter)

    alerting = await AlertingService.start(settings, dead_letter=no_dead_letters)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        httpx.AsyncClient(base_url=alerting.api_url, headers=headers) as client,
        client.stream("GET", "/v1/alerts/stream") as response,
    ):
        lines = response.aiter_lines()
        assert await next_event(lines) == [": connected"]
        stopping = asyncio.create_task(alerting.stop())
        assert [line async for line in lines] == []
        await stopping


async def test_scores_become_signed_webhook_deliveries_end_to_end(tmp_path: Path) -> None:
    engine = AlertEngine(
        AlertingSettings(for_s=2.0, for_points=2, video_for_points=2, resolve_for_s=1.0, cooldown_s=5.0)
    )
    async with service(tmp_path) as svc, receiver(fail_first=1) as hook:
        await svc.subscribe(hook.url, stream="pump-*")
        values = [0.3, 1.4, 1.6, 1.9, 2.4, 1.2, 0.2, 0.2, 0.2]
        for t, value in enumerate(values):
            score = Score(
                modality="sensor",
                stream="pump-7",
                event_time=1000.0 + t,
                score=value,
                threshold=1.0,
                is_anomaly=value >= 1.0,
                model="ts_diffusion",
                model_version="1",
                contributions={"Pressure": value, "Current": 0.1},
            )
            for transition in engine.observe(score):
                svc.submit(transition)
        await svc.dispatcher.drain()
        assert [(a.state, a.severity, a.event_time) for a in hook.alerts] == [
            ("firing", "warning", 1003.0),
            ("firing", "critical", 1004.0),
            ("resolved", "critical", 1007.0),
        ]
        assert {a.alert_id for a in hook.alerts} == {hook.alerts[0].alert_id}
        assert hook.alerts[0].top_channels == ["Pressure", "Current"]


async def test_cli_adds_lists_and_removes_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSENTRY_API__TOKEN", TOKEN)
    settings_module.get_settings.cache_clear()
    cli = CliRunner()
    try:
        async with service(tmp_path) as svc:
            api = ["--api-url", str(svc.client.base_url)]
            added = await asyncio.to_thread(
                cli.invoke,
                cli_app,
                ["subscriptions", "add", "pumps", "--stream", "pump-*", "--webhook", "http://127.0.0.1:9/", *api],
            )
            assert added.exit_code == 0, added.output
            created = json.loads(added.stdout)
            assert created["secret"] and "never shown again" in added.stderr
            listed = await asyncio.to_thread(cli.invoke, cli_app, ["subscriptions", "list", *api])
            assert listed.exit_code == 0 and created["id"] in listed.stdout and "stream=pump-*" in listed.stdout
            assert created["secret"] not in listed.stdout
            removed = await asyncio.to_thread(cli.invoke, cli_app, ["subscriptions", "remove", created["id"], *api])
            assert removed.exit_code == 0 and svc.store.list() == []
            missing = await asyncio.to_thread(cli.invoke, cli_app, ["subscriptions", "remove", created["id"], *api])
            assert missing.exit_code == 1 and "404" in missing.stderr
    finally:
        settings_module.get_settings.cache_clear()


async def test_the_alerting_service_recovers_alerts_a_crashed_worker_never_published(tmp_path: Path) -> None:
    dead_letters: list[DeadLetter] = []

    async def to_dead_letter(letter: DeadLetter) -> None:
        dead_letters.append(letter)

    settings = Settings(
        state_dir=tmp_path,
        api=ApiSettings(port=0, token=TOKEN),
        delivery=FAST_RETRIES,
        alerting=AlertingSettings(for_s=1.0, for_points=2, video_for_points=2),
    )
    scores = [
        Score(
            modality="video",
            stream="cam-3",
            event_time=50.0 + t,
            score=3.0,
            threshold=1.0,
            is_anomaly=True,
            model="video_diffusion",
            model_version="1",
            location=(0.4, 0.6),
        )
        for t in range(3)
    ]
    async with receiver() as hook:
        first = await AlertingService.start(settings, dead_letter=to_dead_letter)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            response = await client.post(
                f"{first.api_url}/v1/subscriptions",
                json={"name": "cams", "selector": {"modality": "video"}, "delivery": {"webhook_url": hook.url}},
            )
            secret = response.json()["secret"]
        hook.secret = secret
        emitted = [alert for score in scores for alert in first.observe(score)]
        assert [(a.state, a.severity, a.location) for a in emitted] == [("firing", "critical", (0.4, 0.6))]
        await first.dispatcher.drain()
        await first.stop()  # "crashed" before publishing and acknowledging

        second = await AlertingService.start(settings, dead_letter=to_dead_letter)
        try:
            assert [a for score in scores for a in second.observe(score)] == []  # re-read scores: nothing new
            recovered = second.recover()
            assert recovered == emitted
            for alert in recovered:
                second.acknowledge(alert)
            await second.dispatcher.drain()
            assert second.recover() == []
        finally:
            await second.stop()
        assert hook.alerts == emitted and hook.counts.requests == 1 and dead_letters == []


async def test_no_more_than_concurrency_requests_are_in_flight(tmp_path: Path) -> None:
    in_flight, most, gate, arrived = 0, 0, asyncio.Event(), asyncio.Event()

    async def slow_hook(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        arrived.set()
        await gate.wait()
        in_flight -= 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/", slow_hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        async with service(tmp_path, FAST_RETRIES.model_copy(update={"concurrency": 2})) as svc:
            await svc.subscribe(f"http://{host}:{port}/")
            for n in range(6):
                svc.submit(alert(stream=f"pump-{n}").model_copy(update={"alert_id": f"al-{n}"}))
            while in_flight < 2:
                await arrived.wait()
                arrived.clear()
            await asyncio.sleep(0.2)  # room for a third request to slip through, if the bound were broken
            assert in_flight == 2
            gate.set()
            await svc.dispatcher.drain()
            assert most == 2 and svc.dispatcher.summary()["delivered"] == 6
    finally:
        await runner.cleanup()


# --- security: where webhooks may go, credentials, the API token ----------------------------------------------


async def test_webhook_targets_are_checked_when_subscribing(tmp_path: Path) -> None:
    default_policy = FAST_RETRIES.model_copy(update={"allowed_targets": []})
    async with service(tmp_path, default_policy) as svc:
        for url, reason in [
            ("http://127.0.0.1:9000/hook", "127.0.0.1 is a loopback address"),
            ("http://localhost:9000/hook", "localhost resolves to 127.0.0.1, a loopback address"),
            ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
            ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
            ("http://10.0.0.8/hook", "10.0.0.8 is a private address"),
        ]:
            response = await svc.client.post("/v1/subscriptions", json={"name": "x", "delivery": {"webhook_url": url}})
            assert response.status_code == 422, (url, response.text)
            assert response.json()["error"].startswith(f"webhook_url refused: {reason}"), response.text
            assert "delivery.allowed_targets" in response.json()["error"]
        sse = await svc.client.post("/v1/subscriptions", json={"name": "wall", "delivery": {"sse": True}})
        sub = f"/v1/subscriptions/{sse.json()['id']}"
        refused_patch = await svc.client.patch(
            sub, json={"delivery": {"webhook_url": "http://10.1.1.1/"}, "secret": SECRET}
        )
        refused_put = await svc.client.put(
            sub, json={"name": "w", "delivery": {"webhook_url": "http://10.1.1.1/"}, "secret": SECRET}
        )
        assert refused_patch.status_code == refused_put.status_code == 422
        assert (await svc.client.get(sub)).json()["delivery"]["webhook_url"] is None  # unchanged
        assert (await svc.client.patch("/v1/subscriptions/sub-none", json={"name": "x"})).status_code == 404

    # Allowed for local receivers, except on the ports of DiffSentry's own services.
    async with service(tmp_path, triton=TritonSettings(http_url="127.0.0.1:18123")) as svc:
        await svc.subscribe("http://127.0.0.1:9000/hook")
        own = await svc.client.post(
            "/v1/subscriptions",
            json={"name": "x", "delivery": {"webhook_url": "http://127.0.0.1:18123/v2/repository/models/m/unload"}},
        )
        assert own.status_code == 422 and "port 18123 of 127.0.0.1 is DiffSentry's own (triton.http_url)" in own.text


async def test_the_cli_shows_why_a_webhook_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIFFSENTRY_API__TOKEN", TOKEN)
    settings_module.get_settings.cache_clear()
    try:
        async with service(tmp_path, FAST_RETRIES.model_copy(update={"allowed_targets": []})) as svc:
            api = ["--api-url", str(svc.client.base_url)]
            refused = await asyncio.to_thread(
                CliRunner().invoke,
                cli_app,
                ["subscriptions", "add", "meta", "--webhook", "http://169.254.169.254/", *api],
            )
        assert refused.exit_code == 1
        assert "HTTP 422: webhook_url refused: 169.254.169.254 is a link-local address" in refused.stderr
    finally:
        settings_module.get_settings.cache_clear()


async def test_delivery_checks_the_target_again_and_redacts_credentials(tmp_path: Path) -> None:
    async with service(tmp_path) as svc, receiver() as hook:
        with_credentials = hook.url.replace("http://", "http://user:hunter2@")
        created = await svc.subscribe(with_credentials)
        listed = await svc.client.get("/v1/subscriptions")
        for body in (json.dumps(created), listed.text):
            assert "hunter2" not in body and "http://***@127.0.0.1" in body
    # The worker restarts with a policy that no longer admits loopback: the stored subscription is not delivered.
    async with service(tmp_path, FAST_RETRIES.model_copy(update={"allowed_targets": []})) as svc, receiver() as hook:
        renamed = await svc.client.patch(f"/v1/subscriptions/{created['id']}", json={"name": "renamed"})
        assert renamed.status_code == 422  # nor can it be changed without a target the policy admits
        assert svc.submit(alert()) == 1
        await svc.dispatcher.drain()
        (letter,) = svc.dead_letters
        assert "refused by the outbound policy: 127.0.0.1 is a loopback address" in letter.reason
        assert "hunter2" not in letter.reason and "http://***@127.0.0.1" in letter.reason
        assert hook.counts.requests == 0


async def test_the_api_refuses_the_development_token_unless_allowed(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "subscriptions.sqlite")
    hub = AlertHub()
    with pytest.raises(ValueError, match="default development token"):
        await serve_api(Settings(state_dir=tmp_path, api=ApiSettings(port=0)), store, hub)
    runner = await serve_api(Settings(state_dir=tmp_path, api=ApiSettings(port=0, allow_dev_token=True)), store, hub)
    await runner.cleanup()
