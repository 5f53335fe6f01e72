"""Two API instances over one real PostgreSQL (a local process the tests start): they see the same subscriptions and
silences, a delivery is sent once, and a delivery pending on an instance killed with SIGKILL is completed by the
other once the dead one's lease runs out."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from core.contracts import Alert
from core.settings import ApiSettings, DatabaseSettings, DeliverySettings, Settings
from infra.postgres import postgres_data_dir
from infra.processes import free_port
from infra.services import start_postgres, stop_service, wait_healthy
from operators.notifier import Notifier
from operators.state_db import StateDatabase, notification_deliveries, subscriptions
from operators.webhook_receiver import WebhookReceiver
from tests.integration.api_instance import api_instance
from tests.state import fresh_postgres_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TOKEN = "shared-state-token"
SECRET = "a-webhook-secret-both-know"
LEASE_S = 1.0
SOURCE_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for this module; yields its URL without a database name."""
    state_dir = tmp_path_factory.mktemp("postgres")
    record = start_postgres(state_dir, free_port())
    try:
        wait_healthy([record], 60.0)
        yield record.url.rsplit("/", 1)[0]
    finally:
        stop_service(record, 20.0)
        shutil.rmtree(postgres_data_dir(state_dir), ignore_errors=True)


@pytest.fixture
def database_url(postgres_server: str) -> str:
    """A database of its own for each test."""
    return fresh_postgres_database(postgres_server)


def _settings(state_dir: Path, database_url: str, secrets_key: str, instance_id: str) -> Settings:
    return Settings(
        state_dir=state_dir,
        database=DatabaseSettings(url=database_url),
        api=ApiSettings(port=0, token=TOKEN),
        delivery=DeliverySettings(
            secrets_key=secrets_key,
            instance_id=instance_id,
            claim_lease_s=LEASE_S,
            allowed_targets=["127.0.0.1/32"],
            max_attempts=1000,  # the doomed instance retries until it is killed
            backoff_base_s=0.05,
            backoff_max_s=0.2,
        ),
    )


def _client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10.0)


async def test_a_transition_is_handled_notified_and_journalled_once_on_postgresql(
    tmp_path: Path, database_url: str
) -> None:
    """What is new to the database is told apart from a re-run by RETURNING (psycopg reports no rowcount for an
    INSERT ... ON CONFLICT DO NOTHING): a transition is handled once, its event stored once, its delivery once."""
    receiver = WebhookReceiver(SECRET)
    await receiver.start()
    settings = _settings(tmp_path, database_url, Fernet.generate_key().decode(), "only")
    async with api_instance(settings) as instance:
        async with _client(instance.url) as client:
            body = {"name": "ops", "delivery": {"webhook_url": receiver.url}, "secret": SECRET}
            (await client.post("/v1/subscriptions", json=body)).raise_for_status()
        notifier = Notifier(settings.alerting, instance.shared.lifecycle, instance.dispatcher)
        alert = Alert(
            alert_id="al-once", modality="sensor", stream="pump-1", state="firing", severity="warning",
            started_at=1.0, event_time=2.0, score=2.0, threshold=1.0, model="ts_diffusion",
        )  # fmt: skip
        assert [event.kind for event in notifier.handle(alert)] == ["fired"]
        assert notifier.handle(alert) == []  # a re-delivery
        await asyncio.wait_for(receiver.wait_for(1), 30)
        await instance.dispatcher.drain()
        assert [a.alert_id for a in receiver.alerts] == ["al-once"] and receiver.counts.duplicates == 0
        assert [event.kind for event in notifier.events()] == ["fired"]
    await receiver.stop()


async def test_two_instances_see_the_same_subscriptions_and_silences(tmp_path: Path, database_url: str) -> None:
    key = Fernet.generate_key().decode()
    async with (
        api_instance(_settings(tmp_path / "a", database_url, key, "a")) as a,
        api_instance(_settings(tmp_path / "b", database_url, key, "b")) as b,
        _client(a.url) as on_a,
        _client(b.url) as on_b,
    ):
        body = {"name": "ops", "delivery": {"webhook_url": "http://127.0.0.1:9/hook"}, "secret": SECRET}
        created = (await on_a.post("/v1/subscriptions", json=body)).json()
        (listed,) = (await on_b.get("/v1/subscriptions")).json()["subscriptions"]
        assert listed["id"] == created["id"] and listed["has_secret"] and "secret" not in listed
        assert (await on_b.patch(f"/v1/subscriptions/{created['id']}", json={"name": "renamed"})).status_code == 200
        assert (await on_a.get(f"/v1/subscriptions/{created['id']}")).json()["name"] == "renamed"
        # b decrypts the secret a stored (it signs with it); in the database it is only ciphertext
        assert b.shared.subscriptions.get(created["id"]).secret == SECRET  # type: ignore[union-attr]
        with a.shared.database.transaction() as db:
            (row,) = db.execute(select(subscriptions)).all()
        assert SECRET not in repr(tuple(row))

        silence = {"matchers": {"stream": "pump-*"}, "ends_at": time.time() + 3600, "created_by": "ops"}
        made = await on_a.post("/v1/silences", json=silence)
        assert made.status_code == 201
        (seen,) = (await on_b.get("/v1/silences")).json()["silences"]
        assert seen["id"] == made.json()["id"] and seen["state"] == "active"
        assert (await on_b.delete(f"/v1/silences/{seen['id']}", params={"by": "ops"})).status_code == 200
        assert (await on_a.get("/v1/silences", params={"state": "active"})).json()["silences"] == []

        assert (await on_b.delete(f"/v1/subscriptions/{created['id']}")).status_code == 204
        assert (await on_a.get("/v1/subscriptions")).json()["subscriptions"] == []


async def test_with_both_instances_alive_a_delivery_is_sent_once(tmp_path: Path, database_url: str) -> None:
    key = Fernet.generate_key().decode()
    receiver = WebhookReceiver(SECRET)
    await receiver.start()
    try:
        async with (
            api_instance(_settings(tmp_path / "a", database_url, key, "a")) as a,
            api_instance(_settings(tmp_path / "b", database_url, key, "b")),
            _client(a.url) as on_a,
        ):
            body = {"name": "ops", "delivery": {"webhook_url": receiver.url}, "secret": SECRET}
            subscription = (await on_a.post("/v1/subscriptions", json=body)).json()
            sent = (await on_a.post(f"/v1/subscriptions/{subscription['id']}/test")).json()
            await asyncio.wait_for(receiver.wait_for(1), 10.0)
            await asyncio.sleep(3 * LEASE_S)  # several claim rounds of b: it takes nothing a holds
            assert receiver.keys == [sent["notification_id"]] and receiver.counts.requests == 1
            assert _holders(a) == {"a"}
    finally:
        await receiver.stop()


async def test_a_delivery_pending_on_a_killed_instance_is_completed_by_the_other(
    tmp_path: Path, database_url: str
) -> None:
    key = Fernet.generate_key().decode()
    receiver = WebhookReceiver(SECRET, fail_first=10**9)  # fails until the doomed instance is dead
    await receiver.start()
    doomed = _spawn_instance(_settings(tmp_path / "doomed", database_url, key, "doomed"), tmp_path / "doomed.log")
    try:
        url = await asyncio.to_thread(_listening_url, doomed)
        async with _client(url) as on_doomed:
            body = {"name": "ops", "delivery": {"webhook_url": receiver.url}, "secret": SECRET}
            subscription = (await on_doomed.post("/v1/subscriptions", json=body)).json()
            sent = (await on_doomed.post(f"/v1/subscriptions/{subscription['id']}/test")).json()
        while receiver.counts.requests < 2:  # it is trying: the delivery is pending under its claim
            await asyncio.sleep(0.05)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        receiver.fail_first = receiver.counts.requests  # from now on the receiver answers

        async with api_instance(_settings(tmp_path / "survivor", database_url, key, "survivor")) as survivor:
            await asyncio.wait_for(receiver.wait_for(1), 10 * LEASE_S)
            await survivor.dispatcher.drain()
            assert receiver.keys == [sent["notification_id"]]
            (delivery,) = survivor.dispatcher.deliveries(subscription["id"])
            assert delivery["outcome"] == "delivered" and delivery["attempts"] > 1  # the dead one's attempts count
            assert _holders(survivor) == {"survivor"}
            assert survivor.dead_letters == []
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        await receiver.stop()


def _holders(instance) -> set[str]:  # type: ignore[no-untyped-def]
    with instance.shared.database.transaction() as db:
        return set(db.execute(select(notification_deliveries.c.claimed_by)).scalars())


def _spawn_instance(settings: Settings, log: Path) -> subprocess.Popen[str]:
    delivery = settings.delivery
    env = {
        **os.environ,
        "PYTHONPATH": str(SOURCE_ROOT),
        "DIFFSENTRY_STATE_DIR": str(settings.state_dir),
        "DIFFSENTRY_DATABASE__URL": str(settings.database.url),
        "DIFFSENTRY_API__PORT": "0",
        "DIFFSENTRY_API__TOKEN": TOKEN,
        "DIFFSENTRY_DELIVERY__SECRETS_KEY": str(delivery.secrets_key),
        "DIFFSENTRY_DELIVERY__INSTANCE_ID": delivery.instance(),
        "DIFFSENTRY_DELIVERY__CLAIM_LEASE_S": str(delivery.claim_lease_s),
        "DIFFSENTRY_DELIVERY__ALLOWED_TARGETS": '["127.0.0.1/32"]',
        "DIFFSENTRY_DELIVERY__MAX_ATTEMPTS": str(delivery.max_attempts),
        "DIFFSENTRY_DELIVERY__BACKOFF_BASE_S": str(delivery.backoff_base_s),
        "DIFFSENTRY_DELIVERY__BACKOFF_MAX_S": str(delivery.backoff_max_s),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.api_instance"],
        cwd=SOURCE_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )


def _listening_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening "):
        raise AssertionError(f"the instance did not start (exit {process.poll()}): {line!r}")
    return line.split()[1]


def test_instances_starting_together_migrate_one_at_a_time(database_url: str) -> None:
    def open_and_count() -> int:
        database = StateDatabase.open(database_url)
        try:
            with database.transaction() as db:
                return len(db.execute(select(notification_deliveries.c.seq)).all())
        finally:
            database.close()

    pool = ThreadPoolExecutor(4)
    try:  # without the migration lock they fail ("already exists") or wait on each other's catalog locks
        assert list(pool.map(lambda _: open_and_count(), range(4), timeout=60)) == [0, 0, 0, 0]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
