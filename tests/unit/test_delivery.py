import asyncio

import httpx
import pytest

from core.contracts import Alert, DeadLetter
from core.settings import DeliverySettings
from operators.delivery import AlertDispatcher, AlertHub, DeliveryJournal, sign, verify_signature
from operators.outbound import OutboundPolicy
from operators.subscriptions import Delivery, Selector, SubscriptionSpec, SubscriptionStore


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


def _alert(stream: str, n: int) -> Alert:
    return Alert(
        alert_id=f"al-{n}",
        modality="sensor",
        stream=stream,
        state="firing",
        severity="warning",
        started_at=0.0,
        event_time=float(n),
        score=2.0,
        threshold=1.0,
        model="m",
    )


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


def test_journal_drops_old_finished_deliveries_and_keeps_pending_ones(tmp_path, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("operators.delivery.time.time", lambda: now[0])
    journal = DeliveryJournal(tmp_path / "journal.sqlite")
    delivered, pending, dead, cancelled, recent = (_alert("pump-1", n) for n in range(5))
    for alert in (delivered, pending, dead, cancelled):
        assert journal.add("sub-1", alert)
    journal.record("sub-1", delivered, 1, "delivered", None)
    journal.record("sub-1", dead, 5, "dead_lettered", "HTTP 503")
    journal.record("sub-1", cancelled, 0, "cancelled", "subscription removed or off")
    journal.record("sub-1", pending, 2, "pending", "HTTP 503")
    now[0] = 2000.0
    assert journal.add("sub-1", recent)
    journal.record("sub-1", recent, 1, "delivered", None)

    assert journal.prune(finished_before=1500.0) == 3
    assert journal.summary() == {"pending": 1, "delivered": 1, "dead_lettered": 0, "cancelled": 0, "attempts": 3}
    assert [alert.alert_id for _, alert, _ in journal.pending()] == [pending.alert_id]
    # a pruned transition can be journalled (and so delivered) again; a kept one still cannot
    assert journal.add("sub-1", delivered) and not journal.add("sub-1", recent)
    journal.close()


async def test_dispatcher_prunes_the_journal_when_it_starts(tmp_path, monkeypatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("operators.delivery.time.time", lambda: now[0])
    journal = DeliveryJournal(tmp_path / "journal.sqlite")
    old = _alert("pump-1", 1)
    journal.add("sub-1", old)
    journal.record("sub-1", old, 1, "delivered", None)
    now[0] = 1000.0 + 7 * 24 * 3600 + 1
    store = SubscriptionStore(tmp_path / "subscriptions.sqlite")

    async def nowhere(_: DeadLetter) -> None:
        raise AssertionError("nothing is dead-lettered here")

    dispatcher = AlertDispatcher(
        store, journal, settings=DeliverySettings(), dead_letter=nowhere, source_topic="alerts"
    )
    assert await dispatcher.start() == 0
    assert dispatcher.summary()["delivered"] == 0
    await dispatcher.stop()
    journal.close()


async def _deliver_to(tmp_path, statuses: list[int | Exception], max_attempts: int = 3) -> tuple[list[str], list]:
    """Delivers one alert to a webhook answering ``statuses`` in turn (an exception: no answer); returns the
    ``X-DiffSentry-Attempt`` headers received and the dead letters."""
    answers = iter(statuses)
    attempts: list[str] = []

    def webhook(request: httpx.Request) -> httpx.Response:
        attempts.append(request.headers["X-DiffSentry-Attempt"])
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    store = SubscriptionStore(tmp_path / "subscriptions.sqlite")
    store.create(SubscriptionSpec(name="hook", delivery=Delivery(webhook_url="http://203.0.113.7/hook")))
    journal = DeliveryJournal(tmp_path / "journal.sqlite")
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
            client=client,
            outbound=OutboundPolicy(allowed_targets=["203.0.113.0/24"]),  # a documentation range: allowed here
        )
        await dispatcher.start()
        assert dispatcher.submit(_alert("pump-1", 1)) == 1
        await dispatcher.drain()
        await dispatcher.stop()
    journal.close()
    return attempts, letters


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
