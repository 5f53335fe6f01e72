"""The stores instances share, opened together on one database: subscriptions, the delivery journal, the lifecycle."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.settings import Settings
from operators.delivery import DeliveryJournal
from operators.lifecycle import LifecycleStore
from operators.secrets_at_rest import KEY_FILE, SecretCipher
from operators.state_db import StateDatabase, state_database_url
from operators.state_import import import_legacy_files
from operators.subscriptions import SubscriptionStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharedState:
    database: StateDatabase
    subscriptions: SubscriptionStore
    journal: DeliveryJournal
    lifecycle: LifecycleStore

    @classmethod
    def open(cls, settings: Settings) -> SharedState:
        """The stores on ``database.url`` (default: ``<state_dir>/state.sqlite``), its schema migrated to head;
        secrets under ``delivery.secrets_key`` or the key file in the state dir, deliveries claimed as
        ``delivery.instance_id`` (default: the host name). The sqlite files of the version before it, found in the
        state dir, are imported first."""
        database = StateDatabase.open(state_database_url(settings.database.url, settings.state_dir))
        delivery = settings.delivery
        imported = import_legacy_files(settings.state_dir, database, delivery.instance())
        if imported:
            log.info("imported %s into the state database", ", ".join(imported))
        cipher = SecretCipher.load(delivery.secrets_key, settings.state_dir / KEY_FILE)
        return cls(
            database,
            SubscriptionStore(database, cipher),
            DeliveryJournal(database, delivery.instance(), delivery.claim_lease_s),
            LifecycleStore(database),
        )

    def close(self) -> None:
        self.database.close()
