"""Health checks of the local stack's services, by configured address or by the state file's record."""

from __future__ import annotations

import asyncio

import httpx

from core.settings import InfluxSettings, KafkaSettings, Settings, TritonSettings
from core.stack_state import (
    KAFKA,
    OBJECT_STORE,
    POSTGRES,
    TRITON,
    ServiceRecord,
    StackState,
)
from infra import kafka as kafka_clients
from infra.postgres import postgres_healthy
from infra.processes import BROKER_BUCKET
from triton_models.paths import PING_MODEL

# --- health ---------------------------------------------------------------------------------------------------


def http_base(address: str) -> str:
    return address if "://" in address else f"http://{address}"


async def _kafka_metadata(kafka: KafkaSettings, timeout_s: float) -> list[str]:
    admin = kafka_clients.admin(kafka, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def kafka_healthy(kafka: KafkaSettings, timeout_s: float = 3.0) -> bool:
    """A metadata request answers."""
    try:
        asyncio.run(asyncio.wait_for(_kafka_metadata(kafka, timeout_s), timeout_s))
    except Exception:  # refused, timed out, not Kafka: all mean "not healthy"
        return False
    return True


def triton_healthy(http_url: str, timeout_s: float = 3.0) -> bool:
    """The server is ready and serves the health model."""
    base = http_base(http_url)
    try:
        with httpx.Client(timeout=timeout_s) as client:
            server = client.get(f"{base}/v2/health/ready")
            model = client.get(f"{base}/v2/models/{PING_MODEL}/ready")
    except httpx.HTTPError:
        return False
    return server.status_code == 200 and model.status_code == 200


def influx_healthy(url: str, timeout_s: float = 3.0) -> bool:
    """``/ping`` answers 204: the same on InfluxDB 2.x and VictoriaMetrics."""
    try:
        response = httpx.get(f"{http_base(url)}/ping", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 204)


def object_store_healthy(url: str, timeout_s: float = 3.0) -> bool:
    """The S3 API answers and the broker's bucket exists."""
    try:
        response = httpx.head(f"{url}/{BROKER_BUCKET}", timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def service_url(settings: Settings, name: str) -> str:
    if name == KAFKA:
        return settings.kafka.bootstrap_servers
    if name == TRITON:
        return http_base(settings.triton.http_url)
    if name == POSTGRES:
        return settings.database.url or ""
    return settings.influx.url


def default_url(name: str) -> str:
    """The address a service has when nothing (configuration or a running local stack) says otherwise."""
    if name == KAFKA:
        return KafkaSettings().bootstrap_servers
    if name == TRITON:
        return http_base(TritonSettings().http_url)
    if name == POSTGRES:
        return ""  # none: the sqlite file in the state dir
    return InfluxSettings().url


def addresses_in_use(settings: Settings) -> Settings:
    """``settings`` with the recorded address of each local stack service that is stopped now where the settings
    fall back to the default: that is where clients started earlier still dial, and where ``stack up`` restarts it."""
    state = StackState.load(settings.state_dir.resolve())
    for name, record in state.services.items():
        if name == OBJECT_STORE or service_url(settings, name) != default_url(name):
            continue
        for section, values in record.settings_values().items():
            settings = settings.model_copy(update={section: getattr(settings, section).model_copy(update=values)})
    return settings


def service_healthy(settings: Settings, name: str) -> bool:
    if name == KAFKA:
        return kafka_healthy(settings.kafka)
    if name == TRITON:
        return triton_healthy(settings.triton.http_url)
    if name == POSTGRES:
        return settings.database.url is not None and postgres_healthy(settings.database.url)
    return influx_healthy(settings.influx.url)


def record_healthy(record: ServiceRecord) -> bool:
    if record.name == KAFKA:
        return kafka_healthy(KafkaSettings(bootstrap_servers=record.url))
    if record.name == TRITON:
        return triton_healthy(record.url)
    if record.name == OBJECT_STORE:
        return object_store_healthy(record.url)
    if record.name == POSTGRES:
        return postgres_healthy(record.url)
    return influx_healthy(record.url)
