"""Notification channels against real receivers on 127.0.0.1: the Alertmanager-format webhook, apprise URLs
(``json://``, ``form://``), their retries, dead letters and resumption, the test-send and the delivery log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal
from urllib.parse import parse_qs

import pytest
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from core.contracts import Alert, Notification, decode
from operators.channels import verify_signature
from operators.notifications import notification_id
from operators.state_db import SQLITE_FILE
from tests.integration.test_alert_delivery import FAST_RETRIES, Service, alert, receiver, service
from tests.state import delivery_journal, subscription_store

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RecordingReceiver:
    """Answers POSTs to any path with ``statuses`` in turn (then 200) and records each request."""

    statuses: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    port: int = 0

    def url(self, scheme: str, path: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Location": "/redirected"} if 300 <= status < 400 else {}
        return web.Response(status=status, text="recorded", headers=headers)


@asynccontextmanager
async def recording(*statuses: int) -> AsyncIterator[RecordingReceiver]:
    recorder = RecordingReceiver(list(statuses))
    app = web.Application()
    app.router.add_post("/{path:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    recorder.port = runner.addresses[0][1]
    try:
        yield recorder
    finally:
        await runner.cleanup()


# Alertmanager's webhook message (notify/webhook: Message = template.Data + version, groupKey, truncatedAlerts),
# field for field (its JSON names), strict: what a receiver written for Alertmanager parses.
class AlertmanagerAlert(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str
    endsAt: str
    generatorURL: str
    fingerprint: str


class AlertmanagerMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: Literal["4"]
    groupKey: str
    truncatedAlerts: int
    status: Literal["firing", "resolved"]
    receiver: str
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    alerts: list[AlertmanagerAlert]


def grouped(*alerts: Alert, group: str = "pump-house-1") -> Notification:
    return Notification(
        notification_id=notification_id(group, "transition", list(alerts)),
        group=group,
        reason="transition",
        alerts=list(alerts),
        created_at=1_700_000_200.0,
    )


async def subscribe(svc: Service, delivery: dict[str, object], **selector: str) -> dict[str, object]:
    response = await svc.client.post(
        "/v1/subscriptions", json={"name": "night shift", "selector": selector, "delivery": delivery}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def delivery_log(svc: Service, subscription_id: object) -> dict[str, object]:
    response = await svc.client.get("/v1/deliveries", params={"subscription": str(subscription_id), "limit": 10})
    assert response.status_code == 200
    return response.json()


async def test_the_alertmanager_format_reaches_a_receiver_as_alertmanager_sends_it(tmp_path) -> None:
    firing = alert(stream="pump-1", severity="critical")
    resolved = alert(stream="pump-2", state="resolved").model_copy(update={"alert_id": "al-2"})
    notification = grouped(firing, resolved)
    async with service(tmp_path) as svc, recording() as hook:
        created = await subscribe(
            svc, {"webhook_url": hook.url("http", "alertmanager"), "webhook_format": "alertmanager"}
        )
        assert created["delivery"]["webhook_format"] == "alertmanager"  # type: ignore[index]
        assert svc.dispatcher.submit(notification) == 1
        await svc.dispatcher.drain()

    (request,) = hook.requests
    assert verify_signature(str(created["secret"]), request.body, request.headers["X-DiffSentry-Signature"])
    assert request.headers["Idempotency-Key"] == notification.notification_id
    message = AlertmanagerMessage.model_validate_json(request.body)
    assert message.status == "firing" and message.receiver == "night shift" and message.truncatedAlerts == 0
    assert message.groupLabels == {"group": "pump-house-1"} and message.groupKey == '{}:{group="pump-house-1"}'
    assert message.commonLabels == {"alertname": "DiffSentryAnomaly", "modality": "sensor", "model": "ts_diffusion"}
    assert message.externalURL == "http://127.0.0.1:0"  # api.external_url unset: api.host and api.port (0 here)
    by_stream = {a.labels["stream"]: a for a in message.alerts}
    assert by_stream["pump-1"].status == "firing" and by_stream["pump-1"].labels["severity"] == "critical"
    assert by_stream["pump-1"].endsAt == "0001-01-01T00:00:00Z"
    assert datetime.fromisoformat(by_stream["pump-1"].startsAt).timestamp() == firing.started_at
    assert by_stream["pump-2"].status == "resolved"
    assert datetime.fromisoformat(by_stream["pump-2"].endsAt).timestamp() == resolved.event_time
    assert by_stream["pump-1"].annotations["top_channels"] == "Pressure, Current"
    assert by_stream["pump-1"].generatorURL.endswith(f"/v1/alerts/{firing.alert_id}")
    assert len({a.fingerprint for a in message.alerts}) == 2


async def test_apprise_json_and_form_urls_deliver_to_local_receivers(tmp_path) -> None:
    notification = grouped(alert(stream="pump-1", severity="critical"), alert(stream="fan-1"))
    async with service(tmp_path) as svc, recording() as target:
        json_url = target.url("json", "chat?+X-Room-Token=room-token-nobody-sees")
        form_url = target.url("form", "form")
        created = await subscribe(svc, {"apprise_urls": [json_url, form_url]}, stream="pump-*")
        shown = json.dumps(created) + (await svc.client.get("/v1/subscriptions")).text
        assert "room-token-nobody-sees" not in shown and "/chat" not in shown
        assert created["delivery"]["apprise_urls"] == [  # type: ignore[index]
            f"json://127.0.0.1:{target.port}/…",
            f"form://127.0.0.1:{target.port}/…",
        ]
        assert svc.dispatcher.submit(notification) == 2
        await svc.dispatcher.drain()
        log = await delivery_log(svc, created["id"])

    by_path = {request.path: request for request in target.requests}
    assert set(by_path) == {"/chat", "/form"}
    sent = json.loads(by_path["/chat"].body)
    assert sent["title"] == "[FIRING:1] DiffSentry pump-house-1" and sent["type"] == "failure"
    assert sent["message"].startswith("firing critical: sensor pump-1 scored 1.7 against threshold 1")
    assert "fan-1" not in sent["message"]  # the selector takes pump-* only
    assert by_path["/chat"].headers["X-Room-Token"] == "room-token-nobody-sees"
    form = parse_qs(by_path["/form"].body.decode())
    assert form["title"] == [sent["title"]] and form["message"] == [sent["message"]]
    for request in target.requests:
        assert request.headers["Idempotency-Key"] == notification.notification_id
    assert log["summary"] == {"pending": 0, "delivered": 2, "dead_lettered": 0, "cancelled": 0, "attempts": 2}
    assert {(row["channel"], row["outcome"]) for row in log["deliveries"]} == {  # type: ignore[union-attr]
        ("apprise:0", "delivered"),
        ("apprise:1", "delivered"),
    }


async def test_an_apprise_target_on_loopback_is_refused_unless_allowed(tmp_path) -> None:
    async with service(tmp_path, FAST_RETRIES.model_copy(update={"allowed_targets": []})) as svc:
        response = await svc.client.post(
            "/v1/subscriptions", json={"name": "x", "delivery": {"apprise_urls": ["json://127.0.0.1:9000/hook"]}}
        )
        assert response.status_code == 422
        assert response.json()["error"].startswith(
            "apprise_urls[0] (json://127.0.0.1:9000/…) refused: 127.0.0.1 is a loopback address"
        )
        bad = await svc.client.post("/v1/subscriptions", json={"name": "x", "delivery": {"apprise_urls": ["nope"]}})
        assert bad.status_code == 400 and "apprise" in bad.text


async def test_an_apprise_channel_answering_503_is_retried_until_it_succeeds(tmp_path) -> None:
    async with service(tmp_path) as svc, recording(503, 503) as target:
        created = await subscribe(svc, {"apprise_urls": [target.url("json", "chat")]})
        svc.submit(alert())
        await svc.dispatcher.drain()
        log = await delivery_log(svc, created["id"])
    assert len(target.requests) == 3 and svc.dead_letters == []
    assert len({request.body for request in target.requests}) == 1  # the same notification each time
    (row,) = log["deliveries"]  # type: ignore[misc]
    assert row["channel"] == "apprise:0" and row["outcome"] == "delivered" and row["attempts"] == 3
    assert row["error"] is None


async def test_an_apprise_channel_that_always_fails_ends_as_a_dead_letter_with_the_reason(tmp_path) -> None:
    async with service(tmp_path) as svc, recording(*[503] * 10) as target, receiver() as hook:
        created = await subscribe(
            svc, {"apprise_urls": [target.url("json", "chat")], "webhook_url": hook.url}, stream="pump-*"
        )
        hook.secret = str(created["secret"])
        svc.submit(alert())
        await svc.dispatcher.drain()
        log = await delivery_log(svc, created["id"])
    assert len(target.requests) == FAST_RETRIES.max_attempts
    assert [a.stream for a in hook.alerts] == ["pump-1"]  # the webhook channel is delivered all the same
    (letter,) = svc.dead_letters
    assert letter.error_type == "AppriseDeliveryFailed" and letter.key == "sensor/pump-1"
    assert letter.reason.startswith(
        f"subscription {created['id']}: apprise json://127.0.0.1:{target.port}/… failed after 3 attempt(s): "
    )
    assert "503" in letter.reason
    assert decode(Notification, letter.payload).alerts == [alert()]
    rows = {row["channel"]: row for row in log["deliveries"]}  # type: ignore[union-attr]
    assert rows["apprise:0"]["outcome"] == "dead_lettered" and "503" in rows["apprise:0"]["error"]
    assert rows["webhook"]["outcome"] == "delivered"


async def test_apprise_does_not_follow_redirects(tmp_path) -> None:
    async with service(tmp_path) as svc, recording(*[307] * 10) as target:
        await subscribe(svc, {"apprise_urls": [target.url("json", "chat")]})
        svc.submit(alert())
        await svc.dispatcher.drain()
    assert [request.path for request in target.requests] == ["/chat"] * FAST_RETRIES.max_attempts
    (letter,) = svc.dead_letters
    assert "307" in letter.reason


async def test_a_pending_apprise_delivery_resumes_after_a_restart(tmp_path) -> None:
    slow_retries = FAST_RETRIES.model_copy(update={"backoff_base_s": 600.0, "backoff_max_s": 600.0})
    async with service(tmp_path, slow_retries) as svc, recording(*[503] * 10) as down:
        created = await subscribe(svc, {"apprise_urls": [down.url("json", "chat")]})
        svc.submit(alert())
        while not down.requests:
            await asyncio.sleep(0.01)
        # The worker stops while the delivery waits for its retry.
    async with recording() as up:
        # Moved while the worker was down; the next start resumes the delivery to where the channel is now.
        store = subscription_store(tmp_path / SQLITE_FILE)
        moved = store.patched(str(created["id"]), {"delivery": {"apprise_urls": [up.url("json", "chat")]}})
        assert moved is not None and store.replace(str(created["id"]), moved) is not None
        journal = delivery_journal(tmp_path / SQLITE_FILE)
        assert [p.attempts for p in journal.pending()] == [1]
        async with service(tmp_path) as svc:
            await svc.dispatcher.drain()
            log = await delivery_log(svc, created["id"])
    (request,) = up.requests
    assert request.headers["Idempotency-Key"] == down.requests[0].headers["Idempotency-Key"]
    assert request.body == down.requests[0].body
    (row,) = log["deliveries"]  # type: ignore[misc]
    assert row["outcome"] == "delivered" and row["attempts"] == 2  # one before the restart, one after


async def test_test_send_goes_through_every_channel_whatever_the_selector(tmp_path) -> None:
    async with service(tmp_path) as svc, receiver() as hook, recording() as target:
        created = await subscribe(
            svc,
            {"webhook_url": hook.url, "apprise_urls": [target.url("json", "chat")]},
            stream="pump-*",
        )
        hook.secret = str(created["secret"])
        sent = await svc.client.post(f"/v1/subscriptions/{created['id']}/test")
        assert sent.status_code == 202, sent.text
        assert sent.json()["queued"] == 2
        await svc.dispatcher.drain()
        log = await delivery_log(svc, created["id"])

        sse_only = await subscribe(svc, {"sse": True})
        assert (await svc.client.post(f"/v1/subscriptions/{sse_only['id']}/test")).status_code == 409
        assert (await svc.client.post("/v1/subscriptions/sub-none/test")).status_code == 404
        off = await svc.client.patch(f"/v1/subscriptions/{created['id']}", json={"enabled": False})
        assert off.status_code == 200
        assert (await svc.client.post(f"/v1/subscriptions/{created['id']}/test")).status_code == 409

    (notification,) = hook.notifications
    assert notification.notification_id == sent.json()["notification_id"] and notification.reason == "transition"
    assert [(a.stream, a.state) for a in notification.alerts] == [("diffsentry-test", "firing")]
    (chat,) = target.requests
    assert "diffsentry-test" in json.loads(chat.body)["message"]
    assert {(row["channel"], row["outcome"], row["notification_id"]) for row in log["deliveries"]} == {  # type: ignore[union-attr]
        ("webhook", "delivered", notification.notification_id),
        ("apprise:0", "delivered", notification.notification_id),
    }
