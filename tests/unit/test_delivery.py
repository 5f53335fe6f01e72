import asyncio
import json
from datetime import datetime

import httpx
import pytest

from core.contracts import Alert, AlertEvent, DeadLetter, Notification, Severity, decode
from core.settings import DeliverySettings
from operators.channels import fingerprint, render_alertmanager, render_text, sign, verify_signature
from operators.delivery import AlertDispatcher, AlertHub
from operators.notifications import notification_id, transition_notification
from operators.outbound import OutboundPolicy
from operators.subscriptions import Delivery, Selector, SubscriptionSpec
from tests.state import delivery_journal, subscription_store

EXTERNAL_URL = "http://diffsentry.plant.example:8088"


def test_signature_matches_the_published_hmac_sha256_vector() -> None:
    # The known answer published on Wikipedia's HMAC page for HMAC_SHA256("key", "The quick brown fox ...").
    body = b"The quick brown fox jumps over the lazy dog"
    expected = "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    assert sign("key", body) == expected
    assert verify_signature("key", body, expected)


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        ("key", b"The quick brown fox jumps over the lazy cat", None),
        ("other", b"The quick brown fox jumps over the lazy dog", None),
        ("key", b"The quick brown fox jumps over the lazy dog", "sha256=00"),
        ("key", b"The quick brown fox jumps over the lazy dog", ""),
    ],
)
def test_tampered_bodies_wrong_secrets_and_bad_headers_fail(secret: str, body: bytes, header: str | None) -> None:
    good = sign("key", b"The quick brown fox jumps over the lazy dog")
    assert not verify_signature(secret, body, good if header is None else header)


def _alert(stream: str, n: int, state: str = "firing", severity: Severity = "warning") -> Alert:
    return Alert(
        alert_id=f"al-{n}",
        modality="sensor",
        stream=stream,
        state=state,  # type: ignore[arg-type]
        severity=severity,
        started_at=1_700_000_000.0,
        event_time=1_700_000_000.0 + n,
        score=2.0,
        threshold=1.0,
        model="m",
        top_channels=["Pressure"],
    )


def _grouped(*alerts: Alert, group: str = "pump-house-1") -> Notification:
    return Notification(
        notification_id=notification_id(group, "transition", list(alerts)),
        group=group,
        reason="transition",
        alerts=list(alerts),
        created_at=1_700_000_100.0,
    )


def test_notification_ids_are_deterministic_and_differ_by_member_reason_and_extra() -> None:
    a, b = _alert("pump-1", 1), _alert("pump-2", 2)
    assert notification_id("g", "transition", [a, b]) == notification_id("g", "transition", [b, a])
    assert notification_id("g", "transition", [a]).startswith("nt-") and len(notification_id("g", "repeat", [a])) == 23
    variants = {
        notification_id("g", "transition", [a]),
        notification_id("g", "transition", [a, b]),
        notification_id("g", "repeat", [a]),
        notification_id("g", "repeat", [a], extra="2"),
        notification_id("h", "transition", [a]),
        notification_id("g", "transition", [a.model_copy(update={"state": "resolved"})]),
    }
    assert len(variants) == 6
    single = transition_notification(a, created_at=5.0)
    assert single.group == "sensor/pump-1" and single.alerts == [a]
    assert single.notification_id == notification_id("sensor/pump-1", "transition", [a])


def test_fingerprint_is_prometheus_label_set_fingerprint() -> None:
    # The label signature of prometheus/common's model tests (signature_test.go), and its empty-set value.
    assert int(fingerprint({"name": "garland, briggs", "fear": "love is not enough"}), 16) == 5799056148416392346
    assert int(fingerprint({}), 16) == 14695981039346656037


def test_alertmanager_body_follows_the_webhook_v4_format() -> None:
    firing = _alert("pump-1", 1, severity="critical")
    resolved = _alert("pump-2", 2, state="resolved")
    body = render_alertmanager(_grouped(firing, resolved), "night shift", EXTERNAL_URL + "/")
    assert set(body) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
        "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert body["version"] == "4" and body["truncatedAlerts"] == 0
    assert body["status"] == "firing"  # any alert firing
    assert body["receiver"] == "night shift" and body["externalURL"] == EXTERNAL_URL
    assert body["groupLabels"] == {"group": "pump-house-1"} and body["groupKey"] == '{}:{group="pump-house-1"}'
    assert body["commonLabels"] == {"alertname": "DiffSentryAnomaly", "modality": "sensor", "model": "m"}
    assert body["commonAnnotations"] == {"threshold": "1", "score": "2", "top_channels": "Pressure"}
    first, second = body["alerts"]
    assert set(first) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
    assert first["status"] == "firing" and second["status"] == "resolved"
    assert first["labels"] == {
        "alertname": "DiffSentryAnomaly", "stream": "pump-1", "modality": "sensor", "severity": "critical", "model": "m"
    }  # fmt: skip
    assert first["annotations"]["alert_id"] == "al-1" and "pump-1" in first["annotations"]["summary"]
    assert all(isinstance(value, str) for value in first["annotations"].values())
    assert first["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert datetime.fromisoformat(first["startsAt"]).timestamp() == firing.started_at
    assert first["endsAt"] == "0001-01-01T00:00:00Z"  # still firing: Alertmanager's zero time
    assert datetime.fromisoformat(second["endsAt"]).timestamp() == resolved.event_time
    assert first["generatorURL"] == f"{EXTERNAL_URL}/v1/alerts/al-1"
    assert first["fingerprint"] == fingerprint(first["labels"]) and first["fingerprint"] != second["fingerprint"]
    assert json.loads(json.dumps(body)) == body  # plain JSON

    all_resolved = render_alertmanager(_grouped(resolved), "r", EXTERNAL_URL)
    assert all_resolved["status"] == "resolved" and all_resolved["commonLabels"]["stream"] == "pump-2"


def test_text_rendering_for_chat_and_mail() -> None:
    title, body, kind = render_text(_grouped(_alert("pump-1", 1, severity="critical"), _alert("pump-2", 2)))
    assert title == "[FIRING:2] DiffSentry pump-house-1" and kind == "failure"
    assert body.splitlines()[0].startswith("firing critical: sensor pump-1 scored 2 against threshold 1 at ")
    assert len(body.splitlines()) == 2 and "top channels Pressure" in body
    reminder = _grouped(_alert("pump-1", 1)).model_copy(update={"reason": "repeat"})
    assert render_text(reminder)[0] == "[FIRING:1] DiffSentry pump-house-1 (still firing)"
    assert render_text(reminder)[2] == "warning"
    title, _, kind = render_text(_grouped(_alert("pump-1", 1, state="resolved")))
    assert title == "[RESOLVED] DiffSentry pump-house-1" and kind == "success"


async def test_hub_fans_out_by_selector_and_a_slow_listener_loses_its_oldest() -> None:
    hub = AlertHub(queue_size=2)
    pumps = hub.subscribe(Selector(stream="pump-*"))
    fans = hub.subscribe(Selector(stream="fan-*"))
    for n in range(3):
        assert hub.publish(_alert("pump-1", n)) == 1
    assert fans.empty()
    assert [pumps.get_nowait().alert_id for _ in range(2)] == ["al-1", "al-2"]  # type: ignore[union-attr]
    assert hub.dropped == 1
    hub.close()
    assert await asyncio.wait_for(fans.get(), 1) is None
    hub.unsubscribe(pumps)
    hub.unsubscribe(fans)
    assert hub.publish(_alert("pump-1", 9)) == 0  # nobody listens any more


async def test_hub_gives_every_event_to_event_listeners_only_and_ends_them_at_close() -> None:
    hub = AlertHub(queue_size=2)
    alerts = hub.subscribe(Selector())
    events = [hub.listen_events(), hub.listen_events()]
    made = [AlertEvent(event_id=f"ev-{n}", kind="acknowledged", at=float(n), alert_id="al-1") for n in range(3)]
    for event in made:
        assert hub.publish_event(event) == 2
    assert alerts.empty(), "alert listeners get alerts, not events"
    assert [events[0].get_nowait() for _ in range(2)] == made[1:], "a slow listener loses its oldest"
    hub.unlisten_events(events[0])
    assert hub.publish_event(made[0]) == 1
    hub.close()
    assert [await asyncio.wait_for(events[1].get(), 1) for _ in range(2)] == [made[0], None]


def test_journal_drops_old_finished_deliveries_and_keeps_pending_ones(tmp_path, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("operators.delivery.time.time", lambda: now[0])
    journal = delivery_journal(tmp_path / "journal.sqlite")
    delivered, pending, dead, cancelled, recent = (transition_notification(_alert("pump-1", n)) for n in range(5))
    for notification in (delivered, pending, dead, cancelled):
        assert journal.add("sub-1", "webhook", notification)
    assert journal.add("sub-1", "apprise:0", pending)  # each channel is a delivery of its own
    journal.record("sub-1", "webhook", delivered.notification_id, 1, "delivered", None)
    journal.record("sub-1", "webhook", dead.notification_id, 5, "dead_lettered", "HTTP 503")
    journal.record("sub-1", "webhook", cancelled.notification_id, 0, "cancelled", "subscription removed or off")
    journal.record("sub-1", "webhook", pending.notification_id, 2, "pending", "HTTP 503")
    now[0] = 2000.0
    assert journal.add("sub-2", "webhook", recent)
    journal.record("sub-2", "webhook", recent.notification_id, 1, "delivered", None)

    assert journal.prune(finished_before=1500.0) == 3
    assert journal.summary() == {"pending": 2, "delivered": 1, "dead_lettered": 0, "cancelled": 0, "attempts": 3}
    assert journal.summary("sub-2") == {"pending": 0, "delivered": 1, "dead_lettered": 0, "cancelled": 0, "attempts": 1}
    assert [(p.channel, p.notification, p.attempts) for p in journal.pending()] == [
        ("webhook", pending, 2),
        ("apprise:0", pending, 0),
    ]
    log = journal.recent()
    assert [(row["subscription_id"], row["channel"], row["outcome"]) for row in log] == [
        ("sub-2", "webhook", "delivered"),
        ("sub-1", "apprise:0", "pending"),  # the same time: the later entry first
        ("sub-1", "webhook", "pending"),
    ]
    assert log[2] == {
        "subscription_id": "sub-1",
        "notification_id": pending.notification_id,
        "channel": "webhook",
        "outcome": "pending",
        "attempts": 2,
        "error": "HTTP 503",
        "updated_at": 1000.0,
    }
    assert [row["subscription_id"] for row in journal.recent("sub-1", limit=1)] == ["sub-1"]
    # a pruned delivery can be journalled (and so delivered) again; a kept one still cannot
    assert journal.add("sub-1", "webhook", delivered) and not journal.add("sub-2", "webhook", recent)


async def test_dispatcher_prunes_the_journal_when_it_starts(tmp_path, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("operators.delivery.time.time", lambda: now[0])
    journal = delivery_journal(tmp_path / "journal.sqlite")
    old = transition_notification(_alert("pump-1", 1))
    journal.add("sub-1", "webhook", old)
    journal.record("sub-1", "webhook", old.notification_id, 1, "delivered", None)
    now[0] = 1000.0 + 7 * 24 * 3600 + 1
    store = subscription_store(tmp_path / "subscriptions.sqlite")

    async def nowhere(_: DeadLetter) -> None:
        raise AssertionError("nothing is dead-lettered here")

    dispatcher = AlertDispatcher(
        store,
        journal,
        settings=DeliverySettings(),
        dead_letter=nowhere,
        source_topic="alerts",
        external_url=EXTERNAL_URL,
    )
    assert await dispatcher.start() == 0
    assert dispatcher.summary()["delivered"] == 0
    await dispatcher.stop()


async def _dispatch(
    tmp_path, specs: list[SubscriptionSpec], notification: Notification, handler, max_attempts: int = 3
) -> tuple[list[httpx.Request], list[DeadLetter], int]:
    """Submits one notification to ``specs`` (webhooks answered by ``handler``, in process); returns the requests,
    the dead letters and the number of deliveries queued."""
    requests: list[httpx.Request] = []

    def webhook(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    store = subscription_store(tmp_path / "subscriptions.sqlite")
    for spec in specs:
        store.create(spec)
    journal = delivery_journal(tmp_path / "journal.sqlite")
    letters: list[DeadLetter] = []

    async def to_dead_letter(letter: DeadLetter) -> None:
        letters.append(letter)

    no_wait = DeliverySettings(max_attempts=max_attempts, backoff_base_s=0.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(webhook)) as client:
        dispatcher = AlertDispatcher(
            store,
            journal,
            settings=no_wait,
            dead_letter=to_dead_letter,
            source_topic="alerts",
            external_url=EXTERNAL_URL,
            client=client,
            outbound=OutboundPolicy(allowed_targets=["203.0.113.0/24"]),  # a documentation range: allowed here
        )
        await dispatcher.start()
        queued = dispatcher.submit(notification)
        await dispatcher.drain()
        await dispatcher.stop()
    return requests, letters, queued


def _hook(name: str, path: str, **selector: str) -> SubscriptionSpec:
    return SubscriptionSpec(
        name=name,
        selector=Selector(**selector),
        delivery=Delivery(webhook_url=f"http://203.0.113.7/{path}"),
        secret="s" * 20,
    )


async def test_each_subscription_gets_only_the_alerts_its_selector_takes(tmp_path) -> None:
    pump, fan, critical_fan = _alert("pump-1", 1), _alert("fan-1", 2), _alert("fan-2", 3, severity="critical")
    notification = _grouped(pump, fan, critical_fan)
    specs = [
        _hook("everything", "all"),
        _hook("fans", "fans", stream="fan-*"),
        _hook("critical", "critical", min_severity="critical"),
        _hook("cams", "cams", modality="video"),  # takes none: nothing is sent
    ]
    requests, letters, queued = await _dispatch(tmp_path, specs, notification, lambda _: httpx.Response(200))
    assert queued == 3 and letters == []
    received = {request.url.path: decode(Notification, request.content) for request in requests}
    assert [a.stream for a in received["/all"].alerts] == ["pump-1", "fan-1", "fan-2"]
    assert [a.stream for a in received["/fans"].alerts] == ["fan-1", "fan-2"]
    assert [a.stream for a in received["/critical"].alerts] == ["fan-2"]
    assert {n.notification_id for n in received.values()} == {notification.notification_id}
    assert {r.headers["Idempotency-Key"] for r in requests} == {notification.notification_id}
    assert all(verify_signature("s" * 20, r.content, r.headers["X-DiffSentry-Signature"]) for r in requests)


async def _deliver_to(tmp_path, statuses: list[int | Exception], max_attempts: int = 3) -> tuple[list[str], list]:
    """Delivers one notification to a webhook answering ``statuses`` in turn (an exception: no answer); returns
    the ``X-DiffSentry-Attempt`` headers received and the dead letters."""
    answers = iter(statuses)

    def answer(request: httpx.Request) -> httpx.Response:
        result = next(answers)
        if isinstance(result, Exception):
            raise result
        return httpx.Response(result)

    notification = transition_notification(_alert("pump-1", 1))
    requests, letters, _ = await _dispatch(tmp_path, [_hook("hook", "hook")], notification, answer, max_attempts)
    return [request.headers["X-DiffSentry-Attempt"] for request in requests], letters


async def test_a_failing_webhook_is_retried_until_it_answers(tmp_path) -> None:
    attempts, letters = await _deliver_to(tmp_path, [503, httpx.ConnectError("refused"), 200])
    assert attempts == ["1", "2", "3"] and letters == []


async def test_a_webhook_failing_every_attempt_is_dead_lettered_after_max_attempts(tmp_path) -> None:
    attempts, letters = await _deliver_to(tmp_path, [503] * 5, max_attempts=3)
    assert attempts == ["1", "2", "3"]
    assert len(letters) == 1 and "failed after 3 attempt(s): HTTP 503" in letters[0].reason


async def test_a_4xx_answer_is_not_retried(tmp_path) -> None:
    attempts, letters = await _deliver_to(tmp_path, [401, 200])
    assert attempts == ["1"] and len(letters) == 1 and "HTTP 401" in letters[0].reason
