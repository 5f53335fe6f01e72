"""Reading points back from VictoriaMetrics, the local stand-in for InfluxDB (which only takes writes the v2 way).

A point written with influxdb-client as ``measurement,tag=v field=x`` is stored as the series
``measurement_field{tag="v"}``; timestamps are cut to milliseconds.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

# Measured here: a series new to the store can stay invisible for up to ~1 s even after a forced flush.
DEFAULT_WAIT_S = 10.0


def export_series(url: str, match: str, wait_s: float = DEFAULT_WAIT_S) -> list[dict[str, Any]]:
    """The series matching the selector ``match`` (e.g. ``'scores_value{stream="pump-1"}'``) as exported JSON
    objects ``{"metric": {...}, "values": [...], "timestamps": [...]}``; flushes first, and retries for up to
    ``wait_s`` while nothing matches yet."""
    deadline = time.monotonic() + wait_s
    with httpx.Client(base_url=url, timeout=10.0) as client:
        while True:
            client.post("/internal/force_flush").raise_for_status()
            response = client.get("/api/v1/export", params={"match[]": match})
            response.raise_for_status()
            series = [json.loads(line) for line in response.text.splitlines() if line]
            if series or time.monotonic() > deadline:
                return series
            time.sleep(0.2)
