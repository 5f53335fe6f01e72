"""Notification channels: each renders a notification and sends it once; ``operators/delivery.py`` owns the rest
(journal, retries, dead letters, ordering), the same for every channel.

A subscription has one channel per target, each journalled on its own, so a failing chat service neither holds
back nor repeats the webhook:

- ``"webhook"``: an HTTP POST, HMAC-signed over the body (``X-DiffSentry-Signature``), ``Idempotency-Key`` =
  the notification id. Body ``"diffsentry"``: the Notification JSON; ``"alertmanager"``: Prometheus Alertmanager's
  webhook body (version 4), so receivers written for Alertmanager work unchanged. The request goes to the address
  the outbound policy checked; redirects are not followed.
- ``"apprise:N"``: the N-th of the subscription's apprise URLs (Slack, Teams, mail, ntfy, Telegram, ...): a title
  and a text made of the notification, sent by apprise. Servers the user names are checked by the outbound policy
  first; redirects are off. Apprise reports success or failure but not why in a form worth branching on, so every
  failure but a refused target counts as worth another try (up to ``delivery.max_attempts``). The ``json://``,
  ``form://`` and ``xml://`` targets also get the ``Idempotency-Key`` header; chat and mail services have no such
  thing, so a crash between a send and its journal entry can repeat a message there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import apprise
import httpx

from core.contracts import Alert, Notification
from operators import apprise_urls
from operators.outbound import BlockedTarget, OutboundPolicy, redact_url
from operators.subscriptions import Subscription, WebhookFormat

SIGNATURE_HEADER = "X-DiffSentry-Signature"
TIMESTAMP_HEADER = "X-DiffSentry-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPT_HEADER = "X-DiffSentry-Attempt"
EVENT_HEADER = "X-DiffSentry-Event"

WEBHOOK_CHANNEL = "webhook"
APPRISE_CHANNEL = "apprise:"  # + the URL's position in apprise_urls

# Statuses worth another try: the receiver is overloaded, timed out or not ready; any other 4xx will not change.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

ALERTNAME = "DiffSentryAnomaly"
_NO_END = "0001-01-01T00:00:00Z"  # what Alertmanager sends as endsAt of an alert still firing
# apprise targets that send HTTP headers given as "+Name=value" URL parameters
_HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls"})


class DeliveryFailure(Exception):
    """One attempt failed; ``retryable`` says whether another could succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.retryable = retryable


class Channel(Protocol):
    kind: str  # "webhook" or "apprise": names the dead letter's error type
    description: str  # the target as logs and dead letters show it (no credentials)

    async def send(self, notification: Notification, attempt: int) -> None:
        """Sends once; raises DeliveryFailure."""


def channel_ids(subscription: Subscription) -> list[str]:
    """The journal names of a subscription's channels (the SSE stream is not one: it is not journalled)."""
    ids = [WEBHOOK_CHANNEL] if subscription.delivery.webhook_url is not None else []
    return ids + [f"{APPRISE_CHANNEL}{n}" for n in range(len(subscription.delivery.apprise_urls))]


def sign(secret: str, body: bytes) -> str:
    """The signature header value: ``sha256=`` and the hex HMAC-SHA256 of the exact body bytes."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    # As bytes: compare_digest refuses str with non-ASCII characters, which any client can put in a header.
    if header is None:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode(errors="surrogatepass"))


# --- rendering ---------------------------------------------------------------------------------------------------


def rfc3339(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (prometheus/common ``LabelSet.Fingerprint``): FNV-1a 64 over the
    names in order, each name and value followed by the byte 0xff, as 16 hex digits."""
    value = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in (*part.encode(), 0xFF):
                value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def _labels(alert: Alert) -> dict[str, str]:
    return {
        "alertname": ALERTNAME,
        "stream": alert.stream,
        "modality": alert.modality,
        "severity": alert.severity,
        "model": alert.model,
    }


def _annotations(alert: Alert) -> dict[str, str]:
    annotations = {
        "summary": f"{alert.modality} stream {alert.stream} is anomalous ({alert.severity})",
        "description": _alert_line(alert),
        "alert_id": alert.alert_id,
        "score": f"{alert.score:.4g}",
        "threshold": f"{alert.threshold:.4g}",
    }
    if alert.top_channels:
        annotations["top_channels"] = ", ".join(alert.top_channels)
    if alert.location is not None:
        annotations["location"] = f"{alert.location[0]:.3f},{alert.location[1]:.3f}"
    return annotations


def _common(maps: Sequence[dict[str, str]]) -> dict[str, str]:
    first, *rest = maps
    return {key: value for key, value in first.items() if all(other.get(key) == value for other in rest)}


def render_alertmanager(notification: Notification, receiver: str, external_url: str) -> dict[str, Any]:
    """The Alertmanager webhook (version 4) body of a notification. Its group is the one group label, ``group``;
    ``status`` is firing while any of its alerts fires."""
    base = external_url.rstrip("/")
    alerts = [
        {
            "status": alert.state,
            "labels": _labels(alert),
            "annotations": _annotations(alert),
            "startsAt": rfc3339(alert.started_at),
            "endsAt": rfc3339(alert.event_time) if alert.state == "resolved" else _NO_END,
            "generatorURL": f"{base}/v1/alerts/{quote(alert.alert_id, safe='')}",
            "fingerprint": fingerprint(_labels(alert)),
        }
        for alert in notification.alerts
    ]
    return {
        "version": "4",
        "groupKey": f"{{}}:{{group={json.dumps(notification.group)}}}",
        "truncatedAlerts": 0,
        "status": "firing" if any(alert.state == "firing" for alert in notification.alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {"group": notification.group},
        "commonLabels": _common([entry["labels"] for entry in alerts]),
        "commonAnnotations": _common([entry["annotations"] for entry in alerts]),
        "externalURL": base,
        "alerts": alerts,
    }


def _alert_line(alert: Alert) -> str:
    line = (
        f"{alert.state} {alert.severity}: {alert.modality} {alert.stream} scored {alert.score:.3g} against "
        f"threshold {alert.threshold:.3g} at {rfc3339(alert.event_time)} (since {rfc3339(alert.started_at)})"
    )
    if alert.top_channels:
        line += f"; top channels {', '.join(alert.top_channels)}"
    if alert.location is not None:
        line += f"; at x {alert.location[0]:.2f}, y {alert.location[1]:.2f} of the frame"
    return line


_REASON_TITLES = {"transition": "", "repeat": " (still firing)", "ack_expired": " (acknowledgement expired)"}


def render_text(notification: Notification) -> tuple[str, str, apprise.NotifyType]:
    """Title, body and apprise notification type (the colour or icon chat services show) of a notification."""
    firing = [alert for alert in notification.alerts if alert.state == "firing"]
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    title = f"[{status}] DiffSentry {notification.group}{_REASON_TITLES[notification.reason]}"
    body = "\n".join(_alert_line(alert) for alert in notification.alerts)
    if any(alert.severity == "critical" for alert in firing):
        kind = apprise.NotifyType.FAILURE
    elif firing:
        kind = apprise.NotifyType.WARNING
    else:
        kind = apprise.NotifyType.SUCCESS
    return title, body, kind


# --- channels ----------------------------------------------------------------------------------------------------


class WebhookChannel:
    kind = "webhook"

    def __init__(
        self,
        url: str,
        secret: str,
        body_format: WebhookFormat,
        receiver: str,
        *,
        client: httpx.AsyncClient,
        outbound: OutboundPolicy,
        timeout_s: float,
        external_url: str,
    ) -> None:
        self._url = url
        self._secret = secret
        self._format = body_format
        self._receiver = receiver
        self._client = client
        self._outbound = outbound
        self._timeout_s = timeout_s
        self._external_url = external_url
        self.description = f"webhook {redact_url(url)}"

    def render(self, notification: Notification) -> bytes:
        if self._format == "alertmanager":
            body = render_alertmanager(notification, self._receiver, self._external_url)
            return json.dumps(body, separators=(",", ":")).encode()
        return notification.to_json()

    async def send(self, notification: Notification, attempt: int) -> None:
        try:
            target = await self._outbound.resolve(self._url)  # checked again at every attempt: DNS answers change
        except BlockedTarget as error:
            raise DeliveryFailure(f"refused by the outbound policy: {error}", retryable=False) from error
        except OSError as error:
            raise DeliveryFailure(f"cannot resolve the host: {error}", retryable=True) from error
        body = self.render(notification)
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, body),
            TIMESTAMP_HEADER: str(int(time.time())),
            IDEMPOTENCY_HEADER: notification.notification_id,
            ATTEMPT_HEADER: str(attempt),
            EVENT_HEADER: f"notification.{notification.reason}",
        }
        try:
            response = await self._client.post(
                target.url,
                content=body,
                headers=headers,
                timeout=self._timeout_s,
                follow_redirects=False,  # a redirect could lead anywhere, past the policy
                extensions={"sni_hostname": target.server_name},
            )
        except httpx.TimeoutException as error:
            raise DeliveryFailure(f"timed out ({type(error).__name__})", retryable=True) from error
        except httpx.TransportError as error:
            raise DeliveryFailure(f"{type(error).__name__}: {error}", retryable=True) from error
        if response.is_success:
            return
        if response.is_redirect:
            raise DeliveryFailure(f"HTTP {response.status_code}: redirects are not followed", retryable=False)
        retryable = response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES
        raise DeliveryFailure(f"HTTP {response.status_code}", retryable=retryable)


def _with_header(url: str, name: str, value: str) -> str:
    """``url`` with an apprise ``+Name=value`` parameter (an HTTP header for json://, form://, xml://)."""
    parts = urlsplit(url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}+{name}={quote(value, safe='')}"))


class AppriseChannel:
    kind = "apprise"

    def __init__(self, url: str, *, outbound: OutboundPolicy, timeout_s: float) -> None:
        self._url = url
        self._outbound = outbound
        self._timeout_s = timeout_s
        self.description = f"apprise {apprise_urls.redacted(url)}"

    async def send(self, notification: Notification, attempt: int) -> None:
        try:
            await self._outbound.check_apprise_url(self._url)
        except BlockedTarget as error:
            raise DeliveryFailure(f"refused by the outbound policy: {error}", retryable=False) from error
        except OSError as error:
            raise DeliveryFailure(f"cannot resolve the host: {error}", retryable=True) from error
        url = self._url
        if url.partition("://")[0].lower() in _HEADER_SCHEMES:
            url = _with_header(url, IDEMPOTENCY_HEADER, notification.notification_id)
        # Apprise's own retries stay off (its default): the project's retry policy decides, with the journal.
        asset = apprise_urls.sending_asset()
        sender = apprise.Apprise(asset=asset)
        plugin = apprise_urls.parse(url, asset)
        plugin.socket_connect_timeout = plugin.socket_read_timeout = self._timeout_s
        sender.add(plugin)
        title, body, kind = render_text(notification)
        result = await sender.async_notify(title=title, body=body, notify_type=kind)
        if not result:
            problems = [entry.message for entry in result.logs() if entry.level in ("WARNING", "ERROR")]
            raise DeliveryFailure(problems[-1] if problems else "apprise reported a failure", retryable=True)


class ChannelFactory:
    """Builds a subscription's channels, from its current spec, at each attempt (an edit applies to retries)."""

    def __init__(
        self, client: httpx.AsyncClient, outbound: OutboundPolicy, *, timeout_s: float, external_url: str
    ) -> None:
        self._client = client
        self._outbound = outbound
        self._timeout_s = timeout_s
        self._external_url = external_url

    def channel(self, subscription: Subscription, channel_id: str) -> Channel | None:
        """The channel of that name, or None when the subscription no longer has it."""
        delivery = subscription.delivery
        if channel_id == WEBHOOK_CHANNEL and delivery.webhook_url is not None:
            return WebhookChannel(
                str(delivery.webhook_url),
                subscription.secret or "",
                delivery.webhook_format,
                subscription.name,
                client=self._client,
                outbound=self._outbound,
                timeout_s=self._timeout_s,
                external_url=self._external_url,
            )
        position = channel_id.removeprefix(APPRISE_CHANNEL)
        if channel_id.startswith(APPRISE_CHANNEL) and position.isdigit() and int(position) < len(delivery.apprise_urls):
            url = delivery.apprise_urls[int(position)]
            return AppriseChannel(url, outbound=self._outbound, timeout_s=self._timeout_s)
        return None
