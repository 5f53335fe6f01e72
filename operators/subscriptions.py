"""Alert subscriptions: who wants which alerts, and how; kept durably in the state database.

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
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_serializer, model_validator
from sqlalchemy import delete, insert, select, update

from core.contracts import SEVERITY_ORDER, Alert, Modality, Notification, Severity
from operators import apprise_urls
from operators.secrets_at_rest import SecretCipher
from operators.state_db import StateDatabase, state_meta, subscriptions


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


_KEY_CHECK = "secrets-key-check"
_SELECT_ROWS = select(
    subscriptions.c.id,
    subscriptions.c.spec,
    subscriptions.c.secret,
    subscriptions.c.apprise_urls,
    subscriptions.c.created_at,
    subscriptions.c.updated_at,
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
    """Subscriptions in the state database (``operators/state_db.py``); every method is a short transaction, safe
    to call from the event loop.

    Secrets and apprise URLs are kept encrypted in their own columns, out of the spec, with ``cipher``
    (delivery.secrets_key or the key file in the state dir). Instances sharing a database must share the key: the
    database keeps a token encrypted with the key of the first one, and a store opened with another key fails at
    once instead of writing secrets the others cannot read."""

    def __init__(self, database: StateDatabase, cipher: SecretCipher) -> None:
        self._database = database
        self._cipher = cipher
        self._check_key()

    def _check_key(self) -> None:
        with self._database.transaction() as db:
            db.execute(
                self._database.insert(state_meta)
                .values(name=_KEY_CHECK, value=self._cipher.encrypt(_KEY_CHECK))
                .on_conflict_do_nothing()
            )
            stored = db.execute(select(state_meta.c.value).where(state_meta.c.name == _KEY_CHECK)).scalar_one()
        self._cipher.decrypt(stored)  # WrongSecretsKey

    def _encrypted(self, secret: str | None) -> str | None:
        return self._cipher.encrypt(secret) if secret is not None else None

    def _row_values(self, spec: SubscriptionSpec) -> dict[str, str | None]:
        """The spec without its secrets, the encrypted secret, the encrypted apprise URLs: what a row stores."""
        clear = spec.model_dump_json(exclude={"secret": True, "delivery": {"apprise_urls": True}})
        urls = spec.delivery.apprise_urls
        return {
            "spec": clear,
            "secret": self._encrypted(spec.secret),
            "apprise_urls": self._encrypted(json.dumps(urls)) if urls else None,
        }

    def _decrypted(self, spec: str, secret: str | None, urls: str | None) -> SubscriptionSpec:
        raw = json.loads(spec)
        raw["delivery"]["apprise_urls"] = json.loads(self._cipher.decrypt(urls)) if urls is not None else []
        raw["secret"] = self._cipher.decrypt(secret) if secret is not None else None
        return SubscriptionSpec.model_validate(raw)

    def create(self, spec: SubscriptionSpec) -> tuple[Subscription, str | None]:
        """Stores a new subscription; returns it and the secret generated for a webhook sent without one."""
        generated = None
        if spec.delivery.webhook_url is not None and spec.secret is None:
            generated = secrets.token_urlsafe(32)
            spec = spec.model_copy(update={"secret": generated})
        subscription_id = "sub-" + uuid.uuid4().hex[:16]
        now = time.time()
        with self._database.transaction() as db:
            db.execute(
                insert(subscriptions).values(
                    id=subscription_id, created_at=now, updated_at=now, **self._row_values(spec)
                )
            )
        subscription = self.get(subscription_id)
        assert subscription is not None
        return subscription, generated

    def get(self, subscription_id: str) -> Subscription | None:
        with self._database.transaction() as db:
            row = db.execute(_SELECT_ROWS.where(subscriptions.c.id == subscription_id)).one_or_none()
        return self._from_row(*row) if row else None

    def list(self) -> list[Subscription]:
        with self._database.transaction() as db:
            rows = db.execute(_SELECT_ROWS.order_by(subscriptions.c.created_at, subscriptions.c.id)).all()
        return [self._from_row(*row) for row in rows]

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
        with self._database.transaction() as db:
            return db.execute(delete(subscriptions).where(subscriptions.c.id == subscription_id)).rowcount > 0

    def _spec(self, subscription_id: str) -> SubscriptionSpec | None:
        columns = (subscriptions.c.spec, subscriptions.c.secret, subscriptions.c.apprise_urls)
        with self._database.transaction() as db:
            row = db.execute(select(*columns).where(subscriptions.c.id == subscription_id)).one_or_none()
        return self._decrypted(*row) if row else None

    def _write(self, subscription_id: str, spec: SubscriptionSpec) -> Subscription | None:
        if spec.delivery.webhook_url is not None and spec.secret is None:
            # Only creation generates a secret (and returns it once); an update cannot show one, so it must bring it.
            raise ValueError("a webhook needs a secret: send one with this update")
        with self._database.transaction() as db:
            db.execute(
                update(subscriptions)
                .where(subscriptions.c.id == subscription_id)
                .values(updated_at=time.time(), **self._row_values(spec))
            )
        return self.get(subscription_id)

    def _from_row(
        self, subscription_id: str, raw: str, secret: str | None, urls: str | None, created_at: float, updated_at: float
    ) -> Subscription:
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
