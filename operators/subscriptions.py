"""Alert subscriptions: who wants which alerts, and how; kept durably in sqlite.

A subscription selects alerts by stream glob (``pump-*``), modality (or any) and minimum severity, and receives
them by webhook (signed with its shared secret) and/or on the server-sent-events stream. The secret is write-only:
it is stored encrypted (``operators/secrets_at_rest.py``), used to sign, and never returned by list or get.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_serializer, model_validator

from core.contracts import SEVERITY_ORDER, Alert, Modality, Severity
from operators.secrets_at_rest import KEY_FILE, SecretCipher
from operators.sqlite_store import open_database


class Selector(BaseModel):
    """Which alerts: a shell-style glob on the stream (asset or camera), a modality or any, a minimum severity."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stream: str = Field(default="*", min_length=1, max_length=200)
    modality: Modality | None = None
    min_severity: Severity = "warning"

    def matches(self, alert: Alert) -> bool:
        return (
            fnmatch.fnmatchcase(alert.stream, self.stream)
            and (self.modality is None or self.modality == alert.modality)
            and SEVERITY_ORDER[alert.severity] >= SEVERITY_ORDER[self.min_severity]
        )


class Delivery(BaseModel):
    """How: an HTTP POST to a webhook, the server-sent-events stream, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    webhook_url: HttpUrl | None = None
    sse: bool = False

    @model_validator(mode="after")
    def _some_channel(self) -> Delivery:
        if self.webhook_url is None and not self.sse:
            raise ValueError("a subscription needs a webhook_url, sse, or both")
        return self

    @field_serializer("webhook_url")
    def _url_as_text(self, url: HttpUrl | None) -> str | None:
        return str(url) if url is not None else None


class SubscriptionSpec(BaseModel):
    """What a client sends to create or replace a subscription."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    selector: Selector = Field(default_factory=Selector)
    delivery: Delivery
    # Printable ASCII: it is the HMAC key subscribers type into their own code, in any language.
    secret: str | None = Field(default=None, min_length=16, max_length=512, pattern=r"^[!-~]+$", repr=False)
    enabled: bool = True


class Subscription(BaseModel):
    """A stored subscription; ``secret`` is excluded from every dump, so it cannot leak through the API."""

    model_config = ConfigDict(frozen=True)
    id: str
    name: str
    selector: Selector
    delivery: Delivery
    enabled: bool
    has_secret: bool
    created_at: float
    updated_at: float
    secret: str | None = Field(default=None, exclude=True, repr=False)

    def matches(self, alert: Alert) -> bool:
        return self.enabled and self.selector.matches(alert)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7396): objects merge, ``null`` removes a key, anything else replaces."""
    merged = dict(base)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class SubscriptionStore:
    """Subscriptions in a sqlite file; every method is a short transaction, safe to call from the event loop.

    Secrets are kept encrypted in their own column, out of the spec: ``secrets_key`` (delivery.secrets_key) or the
    key file beside the database."""

    def __init__(self, path: Path, secrets_key: str | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cipher = SecretCipher.load(secrets_key, path.parent / KEY_FILE)
        self._db = open_database(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS subscriptions (id TEXT PRIMARY KEY, spec TEXT NOT NULL, secret TEXT,"
            " created_at REAL NOT NULL, updated_at REAL NOT NULL)"
        )
        self._encrypt_clear_secrets()
        self.list()  # a wrong key fails here, at start, rather than at the first alert

    def _encrypt_clear_secrets(self) -> None:
        """Stores of earlier versions kept each secret in clear inside its spec: move them to the encrypted column."""
        if "secret" in {column[1] for column in self._db.execute("PRAGMA table_info(subscriptions)")}:
            return
        self._db.execute("PRAGMA secure_delete=ON")  # overwrite the clear-text pages instead of only freeing them
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("ALTER TABLE subscriptions ADD COLUMN secret TEXT")
        for subscription_id, raw in self._db.execute("SELECT id, spec FROM subscriptions").fetchall():
            spec = json.loads(raw)
            secret = spec.pop("secret", None)
            self._db.execute(
                "UPDATE subscriptions SET spec = ?, secret = ? WHERE id = ?",
                (json.dumps(spec), self._encrypted(secret), subscription_id),
            )
        self._db.execute("COMMIT")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # and out of the write-ahead log

    def _encrypted(self, secret: str | None) -> str | None:
        return self._cipher.encrypt(secret) if secret is not None else None

    def _decrypted(self, spec: str, secret: str | None) -> SubscriptionSpec:
        parsed = SubscriptionSpec.model_validate_json(spec)
        return parsed.model_copy(update={"secret": self._cipher.decrypt(secret) if secret is not None else None})

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(self, spec: SubscriptionSpec) -> tuple[Subscription, str | None]:
        """Stores a new subscription; returns it and the secret generated for a webhook sent without one."""
        generated = None
        if spec.delivery.webhook_url is not None and spec.secret is None:
            generated = secrets.token_urlsafe(32)
            spec = spec.model_copy(update={"secret": generated})
        subscription_id = "sub-" + uuid.uuid4().hex[:16]
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO subscriptions (id, spec, secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (subscription_id, spec.model_dump_json(exclude={"secret"}), self._encrypted(spec.secret), now, now),
            )
        subscription = self.get(subscription_id)
        assert subscription is not None
        return subscription, generated

    def get(self, subscription_id: str) -> Subscription | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, spec, secret, created_at, updated_at FROM subscriptions WHERE id = ?", (subscription_id,)
            ).fetchone()
        return self._from_row(row) if row else None

    def list(self) -> list[Subscription]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, spec, secret, created_at, updated_at FROM subscriptions ORDER BY created_at, id"
            ).fetchall()
        return [self._from_row(row) for row in rows]

    def replace(self, subscription_id: str, spec: SubscriptionSpec) -> Subscription | None:
        """PUT: all fields but the write-only secret, kept when the new spec omits it; ValueError if invalid."""
        current = self._spec(subscription_id)
        if current is None:
            return None
        if spec.secret is None:
            spec = spec.model_copy(update={"secret": current.secret})
        return self._write(subscription_id, spec)

    def patched(self, subscription_id: str, patch: dict[str, Any]) -> SubscriptionSpec | None:
        """The spec a PATCH (JSON merge-patch semantics) makes of a subscription, for ``replace`` to store once it
        is checked; ValueError (pydantic's included) when the result is invalid."""
        current = self._spec(subscription_id)
        if current is None:
            return None
        merged = _merge(json.loads(current.model_dump_json()), patch)
        if "secret" not in merged and current.delivery.webhook_url is not None:
            merged["secret"] = current.secret  # the secret is write-only; null cannot clear it while a webhook uses it
        return SubscriptionSpec.model_validate(merged)

    def delete(self, subscription_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,))
        return cursor.rowcount > 0

    def matching(self, alert: Alert) -> list[Subscription]:
        """The enabled subscriptions whose selector takes this alert (with their secrets, for signing)."""
        return [subscription for subscription in self.list() if subscription.matches(alert)]

    def _spec(self, subscription_id: str) -> SubscriptionSpec | None:
        with self._lock:
            row = self._db.execute("SELECT spec, secret FROM subscriptions WHERE id = ?", (subscription_id,)).fetchone()
        return self._decrypted(*row) if row else None

    def _write(self, subscription_id: str, spec: SubscriptionSpec) -> Subscription | None:
        if spec.delivery.webhook_url is not None and spec.secret is None:
            # Only creation generates a secret (and returns it once); an update cannot show one, so it must bring it.
            raise ValueError("a webhook needs a secret: send one with this update")
        with self._lock:
            self._db.execute(
                "UPDATE subscriptions SET spec = ?, secret = ?, updated_at = ? WHERE id = ?",
                (spec.model_dump_json(exclude={"secret"}), self._encrypted(spec.secret), time.time(), subscription_id),
            )
        return self.get(subscription_id)

    def _from_row(self, row: tuple[str, str, str | None, float, float]) -> Subscription:
        subscription_id, raw, secret, created_at, updated_at = row
        spec = self._decrypted(raw, secret)
        return Subscription(
            id=subscription_id,
            name=spec.name,
            selector=spec.selector,
            delivery=spec.delivery,
            enabled=spec.enabled,
            has_secret=spec.secret is not None,
            created_at=created_at,
            updated_at=updated_at,
            secret=spec.secret,
        )
