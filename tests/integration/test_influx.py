"""Points written with influxdb-client (the InfluxDB v2 write API) are stored by the local metrics store."""

from __future__ import annotations

import uuid

import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write_api import SYNCHRONOUS

from core.settings import Settings
from infra.victoria_metrics import export_series

pytestmark = pytest.mark.integration

BASE_MS = 1_700_000_000_000


def _export(settings: Settings, series: str) -> list[dict]:
    return export_series(settings.influx.url, series)


def test_synchronous_writes_are_read_back_with_tags(local_stack: Settings) -> None:
    stream = f"pump-{uuid.uuid4().hex[:8]}"
    timestamps = [BASE_MS + 1000 * i for i in range(5)]
    points = [
        Point("diffsentry_test").tag("stream", stream).field("score", 0.25 * i).time(ts, WritePrecision.MS)
        for i, ts in enumerate(timestamps)
    ]
    settings = local_stack.influx
    with InfluxDBClient(url=settings.url, token=settings.token, org=settings.org) as client:
        client.write_api(write_options=SYNCHRONOUS).write(bucket=settings.bucket, record=points)

    [series] = _export(local_stack, f'diffsentry_test_score{{stream="{stream}"}}')
    assert series["metric"]["stream"] == stream
    assert series["values"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert series["timestamps"] == timestamps


async def test_async_client_writes_are_read_back(local_stack: Settings) -> None:
    stream = f"cam-{uuid.uuid4().hex[:8]}"
    settings = local_stack.influx
    async with InfluxDBClientAsync(url=settings.url, token=settings.token, org=settings.org) as client:
        point = Point("diffsentry_test").tag("stream", stream).field("score", 3.5).time(BASE_MS, WritePrecision.MS)
        assert await client.write_api().write(bucket=settings.bucket, record=point)

    [series] = _export(local_stack, f'diffsentry_test_score{{stream="{stream}"}}')
    assert series["values"] == [3.5]


def test_a_point_written_twice_is_stored_once_like_influxdb(local_stack: Settings) -> None:
    """A re-scored window overwrites its point: every stored point counted, not just the distinct timestamps."""
    stream = f"pump-{uuid.uuid4().hex[:8]}"
    settings = local_stack.influx

    def score(value: float) -> Point:
        return Point("diffsentry_test").tag("stream", stream).field("score", value).time(BASE_MS, WritePrecision.MS)

    with InfluxDBClient(url=settings.url, token=settings.token, org=settings.org) as client:
        writer = client.write_api(write_options=SYNCHRONOUS)
        writer.write(bucket=settings.bucket, record=[score(1.0)])
        writer.write(bucket=settings.bucket, record=[score(2.0)])
        [flushed_together] = _export(local_stack, f'diffsentry_test_score{{stream="{stream}"}}')
        writer.write(bucket=settings.bucket, record=[score(3.0)])  # after a flush: the copies lie in different parts
    [flushed_apart] = _export(local_stack, f'diffsentry_test_score{{stream="{stream}"}}')
    for series in (flushed_together, flushed_apart):
        assert series["timestamps"] == [BASE_MS] and len(series["values"]) == 1
