"""Reading stored points back for the console: one measurement's fields for some tags over a time range, from
InfluxDB 2.x (Flux) or the local VictoriaMetrics stand-in (its export API), as the settings say
(``influx.flavor``; "auto" asks the server, as ``diffsentry doctor`` does).

On VictoriaMetrics a field ``f`` of measurement ``m`` is the series ``m_f`` with the tags as labels, and string
fields read back as 0: ask for numeric fields only.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property

import httpx
from influxdb_client import InfluxDBClient

from core.settings import InfluxSettings
from infra.doctor import influx_flavor

QUERY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Sample:
    field: str
    time: float  # event time, seconds
    value: float
    tags: tuple[tuple[str, str], ...]  # every tag of the point's series, sorted


class StoreReader:
    def __init__(self, influx: InfluxSettings) -> None:
        self.influx = influx

    @cached_property
    def flavor(self) -> str:
        return influx_flavor(self.influx)

    def samples(
        self, measurement: str, tags: dict[str, str], fields: list[str], start: float, end: float
    ) -> list[Sample]:
        """The points of ``measurement`` whose tags equal ``tags``, for the fields named (a name ending in ``*``
        is a prefix), with ``start <= time <= end``, sorted by time."""
        read = self._flux if self.flavor == "influxdb" else self._export
        return sorted(read(measurement, tags, fields, start, end), key=lambda sample: (sample.time, sample.field))

    def _export(
        self, measurement: str, tags: dict[str, str], fields: list[str], start: float, end: float
    ) -> list[Sample]:
        names = "|".join(re.escape(f[:-1]) + ".*" if f.endswith("*") else re.escape(f) for f in fields)
        labels = "".join(f",{name}={json.dumps(value)}" for name, value in sorted(tags.items()))
        match = f'{{__name__=~"{re.escape(measurement)}_({names})"{labels}}}'
        with httpx.Client(base_url=self.influx.url, timeout=QUERY_TIMEOUT_S) as client:
            client.post("/internal/force_flush").raise_for_status()
            response = client.get("/api/v1/export", params={"match[]": match, "start": start, "end": end})
            response.raise_for_status()
        samples = []
        for line in response.text.splitlines():
            series = json.loads(line)
            metric = dict(series["metric"])
            field = metric.pop("__name__")[len(measurement) + 1 :]
            series_tags = tuple(sorted(metric.items()))
            samples += [
                Sample(field, t / 1000, float(v), series_tags)
                for t, v in zip(series["timestamps"], series["values"], strict=True)
            ]
        return samples

    def _flux(
        self, measurement: str, tags: dict[str, str], fields: list[str], start: float, end: float
    ) -> list[Sample]:
        def field_test(name: str) -> str:
            if name.endswith("*"):
                return f"strings.hasPrefix(v: r._field, prefix: {json.dumps(name[:-1])})"
            return f"r._field == {json.dumps(name)}"

        tag_tests = "".join(f" and r[{json.dumps(k)}] == {json.dumps(v)}" for k, v in sorted(tags.items()))
        flux = (
            'import "strings"\n'
            f"from(bucket: {json.dumps(self.influx.bucket)})"
            f" |> range(start: time(v: {int(start * 1e9)}), stop: time(v: {int(end * 1e9) + 1}))"
            f" |> filter(fn: (r) => r._measurement == {json.dumps(measurement)}{tag_tests})"
            f" |> filter(fn: (r) => {' or '.join(field_test(f) for f in fields)})"
        )
        internal = {"result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}
        with InfluxDBClient(
            url=self.influx.url, token=self.influx.token, org=self.influx.org, timeout=int(QUERY_TIMEOUT_S * 1000)
        ) as client:
            tables = client.query_api().query(flux, org=self.influx.org)
        return [
            Sample(
                record.get_field(),
                record.get_time().timestamp(),
                float(record.get_value()),
                tuple(sorted((k, str(v)) for k, v in record.values.items() if k not in internal)),
            )
            for table in tables
            for record in table.records
        ]
