"""``diffsentry doctor``: one real round trip through each configured service.

- Kafka: create a fresh topic, produce a message, consume it back, delete the topic;
- Triton: an inference on the health model ``diffsentry_ping`` (echo), and the list of ready models;
- Influx: write a point with influxdb-client and read it back: a Flux query on InfluxDB 2.x, or
  ``/internal/force_flush`` + ``/api/v1/export`` on VictoriaMetrics (``Settings.influx.flavor``, or detected).

Only settings decide where the services are, so the same checks run against the local stack and production.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np
import tritonclient.http as httpclient
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

from core.settings import InfluxSettings, Settings
from infra import kafka
from infra.health import addresses_in_use
from infra.victoria_metrics import export_series
from triton_models.paths import PING_MODEL

CHECK_TIMEOUT_S = 20.0
FIELD = "round_trip"  # VictoriaMetrics stores it as the metric `<measurement>_<field>`


@dataclass(frozen=True)
class CheckResult:
    service: str
    url: str
    ok: bool
    detail: str
    elapsed_ms: float

    def line(self) -> str:
        verdict = "OK  " if self.ok else "FAIL"
        return f"{self.service:<7} {verdict} {self.url:<28} {self.elapsed_ms:7.0f} ms  {self.detail}"


# --- Kafka ----------------------------------------------------------------------------------------------------


async def _kafka_round_trip(settings: Settings) -> str:
    topic = f"diffsentry.doctor-{uuid.uuid4().hex[:12]}"
    payload = f"doctor {time.time()}".encode()
    admin = kafka.admin(settings.kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = kafka.producer(settings.kafka, "doctor")
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, value=payload)
        finally:
            await producer.stop()
        consumer = kafka.consumer(settings.kafka, client_suffix="doctor")
        await consumer.start()
        try:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            consumer.seek(partition, sent.offset)
            record = await consumer.getone()
        finally:
            await consumer.stop()
        if record.value != payload:
            raise RuntimeError(f"consumed {record.value!r}, produced {payload!r}")
    finally:
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()
    return f"produced and consumed 1 message on fresh topic {topic} (deleted)"


def check_kafka(settings: Settings) -> str:
    return asyncio.run(asyncio.wait_for(_kafka_round_trip(settings), CHECK_TIMEOUT_S))


# --- Triton ---------------------------------------------------------------------------------------------------


def check_triton(settings: Settings) -> str:
    client = httpclient.InferenceServerClient(settings.triton.http_url, network_timeout=CHECK_TIMEOUT_S)
    try:
        values = np.array([[0.5, -1.0, 2.0, 3.25]], dtype=np.float32)
        request = httpclient.InferInput("INPUT", list(values.shape), "FP32")
        request.set_data_from_numpy(values)
        result = client.infer(PING_MODEL, [request])
        echoed = result.as_numpy("OUTPUT")
        if echoed is None or not np.array_equal(echoed, values):
            raise RuntimeError(f"{PING_MODEL} answered {echoed!r} for {values!r}")
        ready = sorted(m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY")
    finally:
        client.close()
    return f"{PING_MODEL} echoed {values.size} values; ready models: {', '.join(ready)}"


# --- Influx ---------------------------------------------------------------------------------------------------


def influx_flavor(influx: InfluxSettings) -> str:
    """``influxdb`` or ``victoriametrics``: as configured, or from the server's ``/health`` answer."""
    if influx.flavor != "auto":
        return influx.flavor
    response = httpx.get(f"{influx.url}/health", timeout=CHECK_TIMEOUT_S)
    try:
        body = response.json()
    except json.JSONDecodeError:
        return "victoriametrics"  # answers a plain "OK"
    return "influxdb" if isinstance(body, dict) and body.get("name") == "influxdb" else "victoriametrics"


def _read_back_victoria_metrics(influx: InfluxSettings, measurement: str, run: str) -> list[float]:
    series = export_series(influx.url, f'{measurement}_{FIELD}{{run="{run}"}}')
    return [value for one in series for value in one["values"]]


def _read_back_influxdb(client: InfluxDBClient, influx: InfluxSettings, measurement: str, run: str) -> list[float]:
    flux = (
        f'from(bucket: "{influx.bucket}") |> range(start: -1h)'
        f' |> filter(fn: (r) => r._measurement == "{measurement}" and r.run == "{run}" and r._field == "{FIELD}")'
    )
    return [record.get_value() for table in client.query_api().query(flux, org=influx.org) for record in table.records]


def check_influx(settings: Settings) -> str:
    influx = settings.influx
    flavor = influx_flavor(influx)
    measurement, run, value = "diffsentry_doctor", uuid.uuid4().hex[:12], round(time.time() % 1000, 3)
    point = Point(measurement).tag("run", run).field(FIELD, value).time(time.time_ns() // 1_000_000, WritePrecision.MS)
    with InfluxDBClient(
        url=influx.url, token=influx.token, org=influx.org, timeout=int(CHECK_TIMEOUT_S * 1000)
    ) as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket=influx.bucket, record=point)
        if flavor == "influxdb":
            read = _read_back_influxdb(client, influx, measurement, run)
        else:
            read = _read_back_victoria_metrics(influx, measurement, run)
    if read != [value]:
        raise RuntimeError(f"wrote {value}, read back {read}")
    return f"wrote 1 point and read it back ({flavor})"


# --- all ------------------------------------------------------------------------------------------------------


def _run(service: str, url: str, check: Callable[[Settings], str], settings: Settings) -> CheckResult:
    started = time.perf_counter()
    try:
        detail, ok = check(settings), True
    except Exception as error:  # every failure is reported on the service's line, none stops the others
        detail, ok = f"{type(error).__name__}: {error}".splitlines()[0][:300], False
    return CheckResult(service, url, ok, detail, (time.perf_counter() - started) * 1000)


def run_checks(settings: Settings) -> list[CheckResult]:
    """A real round trip through each service, at the address in use (a stopped local stack service's recorded one)."""
    settings = addresses_in_use(settings)
    return [
        _run("kafka", settings.kafka.bootstrap_servers, check_kafka, settings),
        _run("triton", settings.triton.http_url, check_triton, settings),
        _run("influx", settings.influx.url, check_influx, settings),
    ]
