"""The one place faust apps are built, like ``infra.kafka`` for aiokafka clients: broker address, the short group
timeouts the local broker needs, at-least-once processing, and the transport for the configured broker
(``infra.tansu_compat``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust
from faust.types import TransportT

from core.settings import KafkaSettings
from infra.tansu_compat import transport_for


class _App(faust.App):
    """A faust app whose transport class follows ``kafka.broker`` (faust would pick it by URL scheme)."""

    def __init__(self, app_id: str, kafka: KafkaSettings, **options: Any) -> None:
        self._transport_class = transport_for(kafka)
        super().__init__(app_id, **options)

    def _new_transport(self) -> TransportT:
        return self._transport_class(self.conf.broker_consumer, self)


def faust_app(
    app_id: str,
    kafka: KafkaSettings,
    *,
    datadir: Path,
    store: str = "memory://",
    session_timeout_s: float = 6.0,
    heartbeat_interval_s: float = 1.0,
    **options: Any,
) -> faust.App:
    """At least once (faust's default, stated: exactly once needs transactions, which tansu refuses), no web
    server of faust's own; ``options`` win."""
    if kafka.security_protocol != "PLAINTEXT":
        # faust takes credentials as its own objects; nothing here builds them yet, so refuse rather than connect
        # in plain text to a broker that expects TLS or SASL.
        raise ValueError(f"the alerting tier supports PLAINTEXT brokers only, not {kafka.security_protocol}")
    settings: dict[str, Any] = {
        "broker": [f"kafka://{server.strip()}" for server in kafka.bootstrap_servers.split(",")],
        "store": store,
        "datadir": str(datadir),
        "web_enabled": False,
        "processing_guarantee": "at_least_once",
        "broker_session_timeout": session_timeout_s,
        "broker_heartbeat_interval": heartbeat_interval_s,
        "broker_rebalance_timeout": session_timeout_s,
    }
    return _App(app_id, kafka, **{**settings, **options})
