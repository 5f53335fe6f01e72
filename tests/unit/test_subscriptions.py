import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from core.contracts import Alert, Modality, Severity
from operators.notifications import transition_notification
from operators.secrets_at_rest import KEY_FILE, WrongSecretsKey
from operators.subscriptions import Delivery, Selector, Subscription, SubscriptionSpec, SubscriptionStore
from tests.state import subscription_store


def alert(stream: str = "pump-1", modality: Modality = "sensor", severity: Severity = "warning") -> Alert:
    return Alert(
        alert_id="al-1",
        modality=modality,
        stream=stream,
        state="firing",
        severity=severity,
        started_at=0.0,
        event_time=1.0,
        score=2.0,
        threshold=1.0,
        model="ts_diffusion",
    )


@pytest.mark.parametrize(
    ("pattern", "stream", "expected"),
    [
        ("*", "anything", True),
        ("pump-*", "pump-1", True),
        ("pump-*", "pump-12/left", True),
        ("pump-*", "fan-1", False),
        ("pump-*", "PUMP-1", False),  # case-sensitive: ids are exact
        ("cam-[0-9]", "cam-3", True),
        ("cam-[0-9]", "cam-10", False),
        ("pump-?", "pump-7", True),
        ("pump-1", "pump-1", True),
        ("pump-1", "pump-10", False),
    ],
)
def test_stream_globs(pattern: str, stream: str, expected: bool) -> None:
    assert Selector(stream=pattern).matches(alert(stream=stream)) is expected


def test_modality_none_means_any() -> None:
    assert Selector().matches(alert(modality="video"))
    assert Selector(modality="sensor").matches(alert(modality="sensor"))
    assert not Selector(modality="sensor").matches(alert(modality="video"))


@pytest.mark.parametrize(
    ("minimum", "severity", "expected"),
    [
        ("info", "warning", True),
        ("warning", "warning", True),
        ("warning", "critical", True),
        ("critical", "warning", False),
        ("critical", "critical", True),
    ],
)
def test_minimum_severity(minimum: Severity, severity: Severity, expected: bool) -> None:
    assert Selector(min_severity=minimum).matches(alert(severity=severity)) is expected


def test_a_subscription_needs_a_delivery_channel() -> None:
    with pytest.raises(ValidationError, match="webhook_url, apprise_urls or sse"):
        Delivery()


@pytest.mark.parametrize("url", ["http://example.com/hook", "nosuchservice://host/x", "json:/no-host", "slack://"])
def test_apprise_urls_are_checked_by_apprise_itself(url: str) -> None:
    with pytest.raises(ValidationError, match="apprise"):
        Delivery(apprise_urls=[url])
    assert Delivery(apprise_urls=["json://hooks.example.com/in", "ntfys://ntfy.example.com/plant"]).apprise_urls


def spec(name: str = "ops", **selector: str) -> SubscriptionSpec:
    return SubscriptionSpec(
        name=name, selector=Selector(**selector), delivery=Delivery(webhook_url="http://127.0.0.1:9/hook")
    )


def patch(store: SubscriptionStore, subscription_id: str, body: dict[str, Any]) -> Subscription | None:
    """What the API's PATCH does: merge, (check,) store."""
    spec = store.patched(subscription_id, body)
    return store.replace(subscription_id, spec) if spec is not None else None


def test_the_store_generates_a_secret_and_never_dumps_it(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "s.sqlite")
    created, generated = store.create(spec())
    assert generated is not None and len(generated) >= 32
    assert created.secret == generated and created.has_secret
    assert "secret" not in created.model_dump() and generated not in created.model_dump_json()
    assert generated not in repr(created)
    assert created.delivery.model_dump()["webhook_url"] == "http://127.0.0.1:9/hook"


def test_crud_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = subscription_store(path)
    pumps, _ = store.create(spec("pumps", stream="pump-*").model_copy(update={"secret": "s" * 20}))
    cams, _ = store.create(
        SubscriptionSpec(name="cams", selector=Selector(modality="video"), delivery=Delivery(sse=True))
    )
    gone, _ = store.create(spec("gone"))
    assert store.delete(gone.id) and not store.delete(gone.id)
    patched = patch(store, pumps.id, {"selector": {"min_severity": "critical"}, "enabled": False})
    assert patched is not None
    assert patched.selector == Selector(stream="pump-*", min_severity="critical") and not patched.enabled

    reopened = subscription_store(path)
    assert [s.id for s in reopened.list()] == [pumps.id, cams.id]
    again = reopened.get(pumps.id)
    assert again is not None and again.secret == "s" * 20 and not again.enabled
    assert reopened.get(gone.id) is None


def test_replace_keeps_the_write_only_secret_and_patch_can_rotate_it(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "s.sqlite")
    created, secret = store.create(spec())
    replaced = store.replace(created.id, spec("renamed"))
    assert replaced is not None and replaced.name == "renamed" and replaced.secret == secret
    assert patch(store, created.id, {"secret": None}).secret == secret  # type: ignore[union-attr]
    assert patch(store, created.id, {"secret": "n" * 16}).secret == "n" * 16  # type: ignore[union-attr]
    assert patch(store, "sub-missing", {"name": "x"}) is None


def test_adding_a_webhook_by_update_needs_a_secret(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "s.sqlite")
    created, generated = store.create(SubscriptionSpec(name="sse", delivery=Delivery(sse=True)))
    assert generated is None and not created.has_secret
    with pytest.raises(ValueError, match="needs a secret"):
        patch(store, created.id, {"delivery": {"webhook_url": "http://127.0.0.1:9/"}})
    with pytest.raises(ValueError, match="min_severity"):
        patch(store, created.id, {"selector": {"min_severity": "panic"}})


def test_a_subscription_selects_the_alerts_of_a_notification_its_selector_takes(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "s.sqlite")
    pumps, _ = store.create(spec("pumps", stream="pump-*"))
    critical, _ = store.create(spec("critical", min_severity="critical"))
    off, _ = store.create(spec("off"))
    off = patch(store, off.id, {"enabled": False})
    fans, _ = store.create(spec("fans", stream="fan-*"))
    pump_warning, pump_critical = alert(severity="warning"), alert(stream="pump-2", severity="critical")
    grouped = transition_notification(pump_warning).model_copy(update={"alerts": [pump_warning, pump_critical]})

    assert pumps.select(grouped) is grouped  # takes every alert: the notification as it is
    only_critical = critical.select(grouped)
    assert only_critical is not None and only_critical.alerts == [pump_critical]
    assert only_critical.notification_id == grouped.notification_id and only_critical.group == grouped.group
    assert fans.select(grouped) is None
    assert off is not None and off.select(grouped) is None
    assert grouped.alerts == [pump_warning, pump_critical]  # selecting never changes the original


def test_secrets_are_encrypted_at_rest_and_the_files_are_private(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "s.sqlite")
    created, _ = store.create(spec().model_copy(update={"secret": "a-secret-nobody-may-read"}))
    for name in ("s.sqlite", "s.sqlite-wal", "s.sqlite-shm", KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("s.sqlite*"))
    assert b"a-secret-nobody-may-read" not in on_disk
    assert subscription_store(tmp_path / "s.sqlite").get(created.id).secret == "a-secret-nobody-may-read"  # type: ignore[union-attr]


def test_a_configured_key_replaces_the_key_file_and_a_wrong_key_fails_at_open(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    store = subscription_store(tmp_path / "s.sqlite", secrets_key=key)
    store.create(spec())
    assert not (tmp_path / KEY_FILE).exists()
    assert subscription_store(tmp_path / "s.sqlite", secrets_key=key).list()[0].has_secret
    with pytest.raises(WrongSecretsKey, match="not the key it was encrypted with"):
        subscription_store(tmp_path / "s.sqlite", secrets_key=Fernet.generate_key().decode())
    with pytest.raises(ValueError, match="not a Fernet key"):
        subscription_store(tmp_path / "s.sqlite", secrets_key="too-short")


def test_apprise_urls_are_encrypted_at_rest_and_kept_by_a_put_that_omits_them(tmp_path: Path) -> None:
    store = subscription_store(tmp_path / "s.sqlite")
    urls = ["json://hooks.example.com/in?token=tok-nobody-may-read", "tgram://123456789:bot-token-nobody-reads/42/"]
    created, _ = store.create(SubscriptionSpec(name="chat", delivery=Delivery(apprise_urls=urls)))
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("s.sqlite*"))
    assert b"nobody-may-read" not in on_disk and b"bot-token" not in on_disk and b"json://" not in on_disk

    store = subscription_store(tmp_path / "s.sqlite")
    assert store.get(created.id).delivery.apprise_urls == urls  # type: ignore[union-attr]
    renamed = store.replace(created.id, SubscriptionSpec(name="renamed", delivery=Delivery(sse=True)))
    assert renamed is not None and renamed.delivery.apprise_urls == urls and renamed.delivery.sse
    cleared = store.replace(created.id, SubscriptionSpec(name="r", delivery=Delivery(sse=True, apprise_urls=[])))
    assert cleared is not None and cleared.delivery.apprise_urls == []
    assert patch(store, created.id, {"delivery": {"apprise_urls": urls[:1]}}).delivery.apprise_urls == urls[:1]  # type: ignore[union-attr]


def test_secrets_are_printable_ascii() -> None:
    with pytest.raises(ValidationError, match="secret"):
        SubscriptionSpec(name="x", delivery=Delivery(sse=True), secret="not ascii: é and a space")
