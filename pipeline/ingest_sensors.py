"""``diffsentry ingest sensors``: replay a CSV of sensor readings to Kafka as SensorReading messages in event time.

Accepted layouts (detected from the header):
- SKAB: ``;``-separated, a ``datetime`` column (``YYYY-MM-DD HH:MM:SS``, read as UTC); the label columns
  ``anomaly`` and ``changepoint`` are dropped.
- the benchmark layout: ``,``-separated, a ``timestamp`` column (seconds since the epoch, or ISO 8601); a ``label``
  column, if any, is dropped.
Every other column is a channel. Messages are keyed by asset (one asset -> one partition, so the worker sees its
readings in order). ``--speed`` paces the replay at that multiple of real time (0: as fast as possible);
``--loop`` replays the file forever, shifting event time by the file's span each round so that time moves on.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from core.contracts import SensorReading
from core.settings import Settings, get_settings
from infra import kafka
from triton_models.progress import progress_bar
from triton_models.timeseries.data import read_table


@dataclass(frozen=True)
class ReplayTable:
    """A sensor CSV as the replay needs it: event times in seconds, values as read (float64)."""

    channels: list[str]
    times: list[float]
    rows: list[list[float]]


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        parsed = datetime.fromisoformat(text.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()


def read_sensor_csv(path: Path) -> ReplayTable:
    """The table reader training uses (one parser for both), with event times parsed."""
    table = read_table(path, dtype=np.float64, require_time=True)
    times = []
    for row_number, stamp in enumerate(table.timestamps, start=1):
        try:
            times.append(_parse_time(stamp))
        except ValueError as error:
            raise ValueError(f"{path}: data row {row_number}: {error}") from error
    return ReplayTable(table.channels, times, table.values.tolist())


def readings(table: ReplayTable, asset: str, loop: bool) -> Iterator[SensorReading]:
    """The table's rows as readings, forever when ``loop`` (event time shifted by one span per round)."""
    if not table.times:
        return
    steps = [b - a for a, b in zip(table.times, table.times[1:], strict=False)]
    span = table.times[-1] - table.times[0] + (min(steps) if steps else 1.0)
    shift = 0.0
    while True:
        for t, row in zip(table.times, table.rows, strict=True):
            yield SensorReading(asset=asset, event_time=t + shift, values=dict(zip(table.channels, row, strict=True)))
        if not loop:
            return
        shift += span


async def publish(
    settings: Settings,
    table: ReplayTable,
    asset: str,
    speed: float,
    loop: bool,
    limit: int | None = None,
    progress: bool = True,
) -> int:
    return await publish_streams(settings, {asset: table}, speed, loop, limit, progress)


async def publish_streams(
    settings: Settings,
    tables: Mapping[str, ReplayTable],
    speed: float,
    loop: bool,
    limit: int | None = None,
    progress: bool = True,
) -> int:
    """Replay several assets through one producer, their readings merged in event time as a site's sensors report
    them. (Separate producers per asset, unpaced, would put one asset's history ahead of another's in a shared
    partition, and a worker flushes an asset its partition's event time left a window behind as quiet.)"""
    producer = kafka.producer(settings.kafka, "ingest", linger_ms=5)
    await producer.start()
    sent = 0
    pending: list[asyncio.Future] = []
    try:
        wall_start, event_start = time.monotonic(), None
        total = None if loop else sum(len(table.rows) for table in tables.values())
        replay = heapq.merge(*(readings(t, asset, loop) for asset, t in tables.items()), key=lambda r: r.event_time)
        description = f"ingest {', '.join(tables)}"
        for reading in progress_bar(replay, total=total, unit="reading", desc=description, disable=not progress):
            if limit is not None and sent >= limit:
                break
            if speed > 0:
                event_start = reading.event_time if event_start is None else event_start
                delay = (reading.event_time - event_start) / speed - (time.monotonic() - wall_start)
                if delay > 0:
                    await asyncio.sleep(delay)
            key = reading.asset.encode()
            pending.append(await producer.send(settings.topics.sensor_readings, reading.to_json(), key=key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def sensors(
    csv_path: Annotated[Path, typer.Option("--csv", exists=True, dir_okay=False, help="SKAB or benchmark CSV")],
    asset: Annotated[str, typer.Option("--asset", help="asset id the readings belong to")],
    speed: Annotated[float, typer.Option("--speed", min=0.0, help="multiple of real time; 0 = no pacing")] = 1.0,
    loop: Annotated[bool, typer.Option("--loop", help="replay forever, event time moving on")] = False,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="stop after this many readings")] = None,
) -> None:
    """Replay a CSV of sensor readings to the readings topic, in event time."""
    table = read_sensor_csv(csv_path)
    if not all(math.isfinite(v) for row in table.rows for v in row):
        typer.echo("warning: the file holds non-finite values; those readings will be dead-lettered", err=True)
    sent = asyncio.run(publish(get_settings(), table, asset, speed, loop, limit))
    typer.echo(f"published {sent} readings of {asset} ({len(table.channels)} channels)")
