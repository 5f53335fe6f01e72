"""Alert subscriptions: who wants which alerts, and how; kept durably in sqlite.

A subscription selects alerts by stream glob (``pump-*``), modality (or any) and minimum severity, and receives
their notifications by webhook (signed with its shared secret; the DiffSentry or the Alertmanager body), by apprise
URLs (chat, mail, push: ``operators/channels.py``) and/or on the server-sent-events stream. The secret and the
apprise URLs (which carry their services' credentials) are write-only: stored encrypted
(``operators/secrets_at_rest.py``), used to send, never returned by list or get (an apprise URL shows only as
its scheme and chosen host).
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_serializer, model_validator

from core.contracts import SEVERITY_ORDER, Alert, Modality, Notification, Severity
from operators import apprise_urls
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


def _apprise_url(url: str) -> str:
    apprise_urls.parse(url)
    return url


AppriseUrl = Annotated[str, Field(min_length=4, max_length=2000), AfterValidator(_apprise_url)]
WebhookFormat = Literal["diffsentry", "alertmanager"]


class Delivery(BaseModel):
    """How: an HTTP POST to a webhook (the Notification JSON, or Alertmanager's webhook body), apprise URLs,
    the server-sent-events stream; any of them together."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    webhook_url: HttpUrl | None = None
    webhook_format: WebhookFormat = "diffsentry"
    apprise_urls: list[AppriseUrl] = Field(default_factory=list, max_length=20, repr=False)
    sse: bool = False

    @model_validator(mode="after")
    def _some_channel(self) -> Delivery:
        if self.webhook_url is None and not self.apprise_urls and not self.sse:
            raise ValueError("a subscription needs a webhook_url, apprise_urls or sse")
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

    def select(self, notification: Notification) -> Notification | None:
        """The notification with only the alerts this subscription takes; None when it takes none (or is off)."""
        if not self.enabled:
            return None
        alerts = [alert for alert in notification.alerts if self.selector.matches(alert)]
        if not alerts:
            return None
        return (
            notification
            if len(alerts) == len(notification.alerts)
            else notification.model_copy(update={"alerts": alerts})
        )


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

    Secrets and apprise URLs are kept encrypted in their own columns, out of the spec: ``secrets_key``
    (delivery.secrets_key) or the key file beside the database."""

    def __init__(self, path: Path, secrets_key: str | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cipher = SecretCipher.load(secrets_key, path.parent / KEY_FILE)
        self._db = open_database(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS subscriptions (id TEXT PRIMARY KEY, spec TEXT NOT NULL, secret TEXT,"
            " created_at REAL NOT NULL, updated_at REAL NOT NULL, apprise_urls TEXT)"
        )
        self._encrypt_clear_secrets()
        if "apprise_urls" not in self._columns():  # a store of a version before apprise channels
            self._db.execute("ALTER TABLE subscriptions ADD COLUMN apprise_urls TEXT")
        self.list()  # a wrong key fails here, at start, rather than at the first alert

    def _encrypt_clear_secrets(self) -> None:
        """Stores of earlier versions kept each secret in clear inside its spec: move them to the encrypted column."""
        if "secret" in self._columns():
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

    def _columns(self) -> set[str]:
        return {column[1] for column in self._db.execute("PRAGMA table_info(subscriptions)")}

    def _encrypted(self, secret: str | None) -> str | None:
        return self._cipher.encrypt(secret) if secret is not None else None

    def _row_values(self, spec: SubscriptionSpec) -> tuple[str, str | None, str | None]:
        """The spec without its secrets, the encrypted secret, the encrypted apprise URLs: what a row stores."""
        clear = spec.model_dump_json(exclude={"secret": True, "delivery": {"apprise_urls": True}})
        urls = spec.delivery.apprise_urls
        return clear, self._encrypted(spec.secret), self._encrypted(json.dumps(urls)) if urls else None

    def _decrypted(self, spec: str, secret: str | None, urls: str | None) -> SubscriptionSpec:
        raw = json.loads(spec)
        raw["delivery"]["apprise_urls"] = json.loads(self._cipher.decrypt(urls)) if urls is not None else []
        raw["secret"] = self._cipher.decrypt(secret) if secret is not None else None
        return SubscriptionSpec.model_validate(raw)

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
                "INSERT INTO subscriptions (id, spec, secret, apprise_urls, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (subscription_id, *self._row_values(spec), now, now),
            )
        subscription = self.get(subscription_id)
        assert subscription is not None
        return subscription, generated

    def get(self, subscription_id: str) -> Subscription | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, spec, secret, apprise_urls, created_at, updated_at FROM subscriptions WHERE id = ?",
                (subscription_id,),
            ).fetchone()
        return self._from_row(row) if row else None

    def list(self) -> list[Subscription]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, spec, secret, apprise_urls, created_at, updated_at FROM subscriptions"
                " ORDER BY created_at, id"
            ).fetchall()
        return [self._from_row(row) for row in rows]

    def replace(self, subscription_id: str, spec: SubscriptionSpec) -> Subscription | None:
        """PUT: all fields but the write-only ones (the secret, the apprise URLs), each kept when the new spec
        omits it; ValueError if invalid."""
        current = self._spec(subscription_id)
        if current is None:
            return None
        if spec.secret is None:
            spec = spec.model_copy(update={"secret": current.secret})
        if "apprise_urls" not in spec.delivery.model_fields_set:
            delivery = spec.delivery.model_copy(update={"apprise_urls": current.delivery.apprise_urls})
            spec = spec.model_copy(update={"delivery": delivery})
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

    def _spec(self, subscription_id: str) -> SubscriptionSpec | None:
        with self._lock:
            row = self._db.execute(
                "SELECT spec, secret, apprise_urls FROM subscriptions WHERE id = ?", (subscription_id,)
            ).fetchone()
        return self._decrypted(*row) if row else None

    def _write(self, subscription_id: str, spec: SubscriptionSpec) -> Subscription | None:
        if spec.delivery.webhook_url is not None and spec.secret is None:
            # Only creation generates a secret (and returns it once); an update cannot show one, so it must bring it.
            raise ValueError("a webhook needs a secret: send one with this update")
        with self._lock:
            self._db.execute(
                "UPDATE subscriptions SET spec = ?, secret = ?, apprise_urls = ?, updated_at = ? WHERE id = ?",
                (*self._row_values(spec), time.time(), subscription_id),
            )
        return self.get(subscription_id)

    def _from_row(self, row: tuple[str, str, str | None, str | None, float, float]) -> Subscription:
        subscription_id, raw, secret, urls, created_at, updated_at = row
        spec = self._decrypted(raw, secret, urls)
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
