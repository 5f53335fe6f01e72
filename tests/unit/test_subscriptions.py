from pathlib import Path

import pytest
from pydantic import ValidationError

from core.contracts import Alert, Modality, Severity
from operators.subscriptions import Delivery, Selector, SubscriptionSpec, SubscriptionStore


def alert(stream: str = "pump-1", modality: Modality = "sensor", severity: Severity = "warning") -> Alert:
    return Alert(
        alert_id="al-1",
        modality=modality,
        stream=stream,
        state="firing",
        severity=severity,
        started_at=0.0,
        ts=1.0,
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
    with pytest.raises(ValidationError, match="webhook_url, sse, or both"):
        Delivery()


def spec(name: str = "ops", **selector: str) -> SubscriptionSpec:
    return SubscriptionSpec(
        name=name, selector=Selector(**selector), delivery=Delivery(webhook_url="http://127.0.0.1:9/hook")
    )


def test_the_store_generates_a_secret_and_never_dumps_it(tmp_path: Path) -> None:
    store = SubscriptionStore(tmp_path / "s.sqlite")
    created, generated = store.create(spec())
    assert generated is not None and len(generated) >= 32
    assert created.secret == generated and created.has_secret
    assert "secret" not in created.model_dump() and generated not in created.model_dump_json()
    assert generated not in repr(created)
    assert created.delivery.model_dump()["webhook_url"] == "http://127.0.0.1:9/hook"


def test_crud_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = SubscriptionStore(path)
    pumps, _ = store.create(spec("pumps", stream="pump-*").model_copy(update={"secret": "s" * 20}))
    cams, _ = store.create(
        SubscriptionSpec(name="cams", selector=Selector(modality="video"), delivery=Delivery(sse=True))
    )
    gone, _ = store.create(spec("gone"))
    assert store.delete(gone.id) and not store.delete(gone.id)
    patched = store.patch(pumps.id, {"selector": {"min_severity": "critical"}, "enabled": False})
    assert patched is not None
    assert patched.selector == Selector(stream="pump-*", min_severity="critical") and not patched.enabled
    store.close()

    reopened = SubscriptionStore(path)
    assert [s.id for s in reopened.list()] == [pumps.id, cams.id]
    again = reopened.get(pumps.id)
    assert again is not None and again.secret == "s" * 20 and not again.enabled
    assert reopened.get(gone.id) is None


def test_replace_keeps_the_write_only_secret_and_patch_can_rotate_it(tmp_path: Path) -> None:
    store = SubscriptionStore(tmp_path / "s.sqlite")
    created, secret = store.create(spec())
    replaced = store.replace(created.id, spec("renamed"))
    assert replaced is not None and replaced.name == "renamed" and replaced.secret == secret
    assert store.patch(created.id, {"secret": None}).secret == secret  # type: ignore[union-attr]
    assert store.patch(created.id, {"secret": "n" * 16}).secret == "n" * 16  # type: ignore[union-attr]
    assert store.patch("sub-missing", {"name": "x"}) is None


def test_adding_a_webhook_by_update_needs_a_secret(tmp_path: Path) -> None:
    store = SubscriptionStore(tmp_path / "s.sqlite")
    created, generated = store.create(SubscriptionSpec(name="sse", delivery=Delivery(sse=True)))
    assert generated is None and not created.has_secret
    with pytest.raises(ValueError, match="needs a secret"):
        store.patch(created.id, {"delivery": {"webhook_url": "http://127.0.0.1:9/"}})
    with pytest.raises(ValueError, match="min_severity"):
        store.patch(created.id, {"selector": {"min_severity": "panic"}})


def test_matching_takes_enabled_subscriptions_whose_selector_matches(tmp_path: Path) -> None:
    store = SubscriptionStore(tmp_path / "s.sqlite")
    pumps, _ = store.create(spec("pumps", stream="pump-*"))
    critical, _ = store.create(spec("critical", min_severity="critical"))
    off, _ = store.create(spec("off"))
    store.patch(off.id, {"enabled": False})
    store.create(spec("fans", stream="fan-*"))
    assert [s.id for s in store.matching(alert())] == [pumps.id]
    assert [s.id for s in store.matching(alert(severity="critical"))] == [pumps.id, critical.id]
    assert all(s.secret for s in store.matching(alert()))
