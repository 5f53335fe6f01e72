"""The shared-state stores on a sqlite file, as the unit and integration tests open them: each on a database of its
own, so stores that must share one transaction (a Notifier's lifecycle and its dispatcher's journal) come from
``operators.shared_state.SharedState.open`` instead."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from operators.delivery import DeliveryJournal
from operators.lifecycle import LifecycleStore
from operators.secrets_at_rest import KEY_FILE, SecretCipher
from operators.state_db import StateDatabase, sqlite_url
from operators.subscriptions import SubscriptionStore

INSTANCE = "test-instance"


def state_database(path: Path) -> StateDatabase:
    return StateDatabase.open(sqlite_url(path))


def subscription_store(path: Path, secrets_key: str | None = None) -> SubscriptionStore:
    """Its secrets under ``secrets_key`` or the key file beside the database, as the service keeps them."""
    return SubscriptionStore(state_database(path), SecretCipher.load(secrets_key, path.parent / KEY_FILE))


def delivery_journal(path: Path, instance_id: str = INSTANCE, lease_s: float = 30.0) -> DeliveryJournal:
    return DeliveryJournal(state_database(path), instance_id, lease_s)


def lifecycle_store(path: Path) -> LifecycleStore:
    return LifecycleStore(state_database(path))


def fresh_postgres_database(server_url: str) -> str:
    """A new, empty database on a PostgreSQL server (its SQLAlchemy URL without a database name), so that tests
    share the server but never each other's state or secrets key."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server_url.replace('+psycopg', '')}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{server_url}/{name}"
