"""The state database on sqlite: migrations, one transaction across stores, delivery claims and their leases, the
import of the files of the version before."""

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography.fernet import Fernet
from sqlalchemy import inspect, select

from core.contracts import Alert, DeadLetter, Notification
from core.settings import DeliverySettings, Settings
from operators.delivery import AlertDispatcher, DeliveryJournal
from operators.lifecycle import LifecycleStore, Silence
from operators.notifications import transition_notification
from operators.outbound import OutboundPolicy
from operators.secrets_at_rest import KEY_FILE, SecretCipher, WrongSecretsKey
from operators.shared_state import SharedState
from operators.state_db import StateDatabase, metadata, notification_deliveries, sqlite_url
from operators.subscriptions import Delivery, SubscriptionSpec, SubscriptionStore
from operators.webhook_receiver import WebhookReceiver
from tests.state import delivery_journal, state_database

SECRET = "a-shared-webhook-secret"


def _notification(n: int, group: str = "sensor/pump-1", state: str = "firing") -> Notification:
    alert = Alert(
        alert_id=f"al-{n}",
        modality="sensor",
        stream="pump-1",
        state=state,  # type: ignore[arg-type]
        severity="warning",
        started_at=1.0,
        event_time=1.0 + n,
        score=2.0,
        threshold=1.0,
        model="m",
    )
    return transition_notification(alert).model_copy(update={"group": group})


def test_the_migrations_build_exactly_the_declared_schema_and_run_once(tmp_path: Path) -> None:
    database = state_database(tmp_path / "state.sqlite")
    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
        (version,) = connection.exec_driver_sql("SELECT version_num FROM alembic_version").fetchone()
    assert version == "0001"
    again = StateDatabase.open(sqlite_url(tmp_path / "state.sqlite"))  # at head already: nothing to do, no error
    assert set(inspect(again.engine).get_table_names()) == {*metadata.tables, "alembic_version"}


def test_what_stores_do_inside_a_transaction_commits_or_rolls_back_together(tmp_path: Path) -> None:
    database = state_database(tmp_path / "state.sqlite")
    lifecycle = LifecycleStore(database)
    journal = DeliveryJournal(database, "a", 30.0)
    with pytest.raises(RuntimeError), lifecycle.transaction():
        assert lifecycle.mark_handled("transition-1", 1.0)
        assert journal.add("sub-1", "webhook", _notification(1)) == "a"
        raise RuntimeError("the handling failed half way")
    assert journal.pending() == [] and lifecycle.mark_handled("transition-1", 2.0)  # neither was kept


def test_another_key_fails_at_open_even_before_any_secret_is_stored(tmp_path: Path) -> None:
    database = state_database(tmp_path / "state.sqlite")
    SubscriptionStore(database, SecretCipher(Fernet.generate_key()))  # the first store sets the database's key
    with pytest.raises(WrongSecretsKey):
        SubscriptionStore(database, SecretCipher(Fernet.generate_key()))


def test_an_instance_sends_only_what_it_claimed_and_takes_over_expired_leases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr("operators.delivery.time.time", lambda: now[0])
    path = tmp_path / "state.sqlite"
    a, b = delivery_journal(path, "a", lease_s=10.0), delivery_journal(path, "b", lease_s=10.0)
    first, second, other_lane = _notification(1), _notification(2), _notification(3, group="sensor/fan-1")
    assert a.add("sub-1", "webhook", first) == "a"
    assert a.add("sub-1", "webhook", first) is None  # once per subscription and channel, whoever adds it again
    assert b.add("sub-1", "webhook", second) == "a"  # its lane is a's: it joins a's claim, to keep the order
    assert b.add("sub-1", "webhook", other_lane) == "b"
    assert [d.notification for d in b.claim()] == [other_lane]  # a's lease holds
    now[0] += 9.0
    assert [d.notification for d in a.claim()] == [first, second]  # renewed for another 10 s
    now[0] += 9.0
    assert [d.notification for d in b.claim()] == [other_lane]

    now[0] += 11.0  # a stopped renewing: it died
    assert [d.notification for d in b.claim()] == [first, second, other_lane]  # in the order they were recorded
    assert not a.record("sub-1", "webhook", first.notification_id, 1, "delivered", None)  # a's outcome no longer counts
    assert b.record("sub-1", "webhook", first.notification_id, 1, "delivered", None)
    assert a.claim() == []
    with b._database.transaction() as db:
        holders = db.execute(select(notification_deliveries.c.claimed_by).distinct()).scalars().all()
    assert holders == ["b"]


def test_a_released_claim_is_taken_at_once(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    a, b = delivery_journal(path, "a"), delivery_journal(path, "b")
    a.add("sub-1", "webhook", _notification(1))
    assert b.claim() == []
    assert a.release() == 1
    assert [d.notification.notification_id for d in b.claim()] == [_notification(1).notification_id]


async def test_a_dead_instances_pending_delivery_is_completed_by_the_other(tmp_path: Path) -> None:
    receiver = WebhookReceiver(SECRET)
    await receiver.start()
    path = tmp_path / "state.sqlite"
    store = SubscriptionStore(state_database(path), SecretCipher.load(None, tmp_path / "key"))
    subscription, _ = store.create(
        SubscriptionSpec(name="ops", delivery=Delivery(webhook_url=receiver.url), secret=SECRET)
    )
    notification = _notification(1)
    # The dead instance journalled the delivery under its claim and never sent it.
    assert delivery_journal(path, "dead", lease_s=0.3).add(subscription.id, "webhook", notification) == "dead"

    async def no_dead_letters(letter: DeadLetter) -> None:
        raise AssertionError(letter.reason)

    settings = DeliverySettings(claim_lease_s=0.3, backoff_base_s=0.01)
    survivor = AlertDispatcher(
        store,
        delivery_journal(path, "survivor", lease_s=0.3),
        settings=settings,
        dead_letter=no_dead_letters,
        source_topic="alerts",
        external_url="http://127.0.0.1:8088",
        outbound=OutboundPolicy(["127.0.0.1/32"]),
    )
    try:
        assert await survivor.start() == 0  # the dead one's lease still holds
        await asyncio.wait_for(receiver.wait_for(1), 5.0)
        await survivor.drain()
        assert receiver.keys == [notification.notification_id]
        assert survivor.summary() == {"pending": 0, "delivered": 1, "dead_lettered": 0, "cancelled": 0, "attempts": 1}
    finally:
        await survivor.stop()
        await receiver.stop()


def test_the_sqlite_files_of_the_version_before_are_imported_once(tmp_path: Path) -> None:
    cipher = SecretCipher.load(None, tmp_path / KEY_FILE)
    spec = SubscriptionSpec(name="ops", delivery=Delivery(webhook_url="http://203.0.113.7/hook"))
    pending = _notification(1)
    legacy = sqlite3.connect(tmp_path / "subscriptions.sqlite")  # as the stores of that version made it
    legacy.execute(
        "CREATE TABLE subscriptions (id TEXT PRIMARY KEY, spec TEXT NOT NULL, secret TEXT, created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL, apprise_urls TEXT)"
    )
    legacy.execute(
        "INSERT INTO subscriptions VALUES ('sub-old', ?, ?, 1.0, 2.0, NULL)",
        (spec.model_dump_json(exclude={"secret"}), cipher.encrypt(SECRET)),
    )
    legacy.execute(
        "CREATE TABLE notification_deliveries (subscription_id TEXT NOT NULL, notification_id TEXT NOT NULL,"
        " channel TEXT NOT NULL, payload TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " outcome TEXT NOT NULL DEFAULT 'pending', last_error TEXT, updated_at REAL NOT NULL,"
        " PRIMARY KEY (subscription_id, notification_id, channel))"
    )
    legacy.execute(
        "INSERT INTO notification_deliveries VALUES ('sub-old', ?, 'webhook', ?, 2, 'pending', 'HTTP 503', 3.0)",
        (pending.notification_id, pending.to_json().decode()),
    )
    legacy.commit()
    legacy.close()
    silence = Silence(id="sil-1", ends_at=10.0, starts_at=1.0, created_at=1.0, created_by="ops")
    legacy = sqlite3.connect(tmp_path / "lifecycle.sqlite")
    legacy.execute(
        "CREATE TABLE silences (id TEXT PRIMARY KEY, body TEXT NOT NULL, ends_at REAL NOT NULL,"
        " expiry_announced INTEGER NOT NULL DEFAULT 0)"
    )
    legacy.execute("INSERT INTO silences VALUES ('sil-1', ?, 10.0, 0)", (silence.model_dump_json(),))
    legacy.commit()
    legacy.close()

    settings = Settings(state_dir=tmp_path, delivery=DeliverySettings(instance_id="here"))
    shared = SharedState.open(settings)
    assert shared.subscriptions.get("sub-old").secret == SECRET  # type: ignore[union-attr]
    (delivery,) = shared.journal.claim()
    assert delivery.notification == pending and delivery.attempts == 2
    assert shared.lifecycle.silences() == [silence]
    assert not (tmp_path / "subscriptions.sqlite").exists() and (tmp_path / "subscriptions.sqlite.imported").exists()
    shared.close()
    again = SharedState.open(settings)
    assert len(again.subscriptions.list()) == 1 and len(again.journal.pending()) == 1
