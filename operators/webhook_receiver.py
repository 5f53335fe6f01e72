"""A small webhook receiver for the demo and tests: verifies signatures, dedupes, records notifications.

It is also the reference for subscribers of the ``"diffsentry"`` webhook format: verify ``X-DiffSentry-Signature``
over the raw body before parsing it as a Notification, and drop a delivery whose ``Idempotency-Key`` (the
notification id) was seen before (delivery is at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from core.contracts import Alert, ContractError, Notification, decode
from operators.channels import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature


class SignatureMismatch(ContractError):
    """The body was not signed with the receiver's secret."""


def parse_delivery(secret: str, body: bytes, headers: Mapping[str, str]) -> tuple[str, Notification]:
    """The idempotency key and the notification of one webhook request; ContractError (SignatureMismatch when
    the signature is wrong) for anything else. The signature is checked over the raw body before it is parsed."""
    if not verify_signature(secret, body, headers.get(SIGNATURE_HEADER)):
        raise SignatureMismatch("bad signature")
    return headers.get(IDEMPOTENCY_HEADER, ""), decode(Notification, body)


@dataclass
class ReceiverCounts:
    requests: int = 0
    injected_failures: int = 0
    bad_signatures: int = 0
    duplicates: int = 0
    accepted: int = 0


class WebhookReceiver:
    """Serves ``POST /`` on 127.0.0.1; ``fail_first`` answers the first requests with ``fail_status`` (tests)."""

    def __init__(
        self, secret: str, *, host: str = "127.0.0.1", port: int = 0, fail_first: int = 0, fail_status: int = 503
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.notifications: list[Notification] = []
        self.keys: list[str] = []
        self.counts = ReceiverCounts()
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()

    @property
    def url(self) -> str:
        if self._runner is None:
            raise RuntimeError("the receiver is not started")
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}/"

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def alerts(self) -> list[Alert]:
        """The alerts of every notification received, in arrival order."""
        return [alert for notification in self.notifications for alert in notification.alerts]

    async def wait_for(self, count: int) -> list[Alert]:
        """Waits until ``count`` alerts arrived in distinct deliveries (callers bound it with their own timeout)."""
        async with self._arrived:
            await self._arrived.wait_for(lambda: len(self.alerts) >= count)
        return self.alerts

    async def _handle(self, request: web.Request) -> web.Response:
        self.counts.requests += 1
        if self.counts.requests <= self.fail_first:
            self.counts.injected_failures += 1
            return web.Response(status=self.fail_status, text="failing on purpose")
        try:
            key, notification = parse_delivery(self.secret, await request.read(), request.headers)
        except SignatureMismatch as error:
            self.counts.bad_signatures += 1
            return web.Response(status=401, text=str(error))
        except ContractError as error:
            return web.Response(status=400, text=str(error))
        if key in self.keys:
            self.counts.duplicates += 1
            return web.Response(status=200, text="duplicate")
        self.counts.accepted += 1
        async with self._arrived:
            self.keys.append(key)
            self.notifications.append(notification)
            self._arrived.notify_all()
        return web.Response(status=200, text="ok")
