"""Reading sensor tables: SKAB csv (``;``-separated, ``datetime`` column) and the benchmark layout
(``<bench>/<series>/train.csv`` and optional ``test.csv``: ``timestamp`` column, one column per channel, ``label``)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

TIME_COLUMNS = ("timestamp", "datetime", "time")
MISSING_VALUES = ("", "nan", "na", "n/a", "null", "none")
LABEL_COLUMNS = ("label", "anomaly")
IGNORED_COLUMNS = ("changepoint",)


@dataclass
class SensorTable:
    timestamps: list[str]
    channels: list[str]
    values: np.ndarray  # [rows, channels] float32
    labels: np.ndarray | None  # [rows] int8, 1 = anomalous


def read_table(
    path: Path,
    channels: list[str] | None = None,
    *,
    dtype: type = np.float32,
    require_time: bool = False,
    allow_missing: bool = False,
) -> SensorTable:
    """Read a csv whose delimiter is ``;`` or ``,``; every column but time/label/changepoint is a channel.

    Without a time column the row numbers stand in for timestamps, unless ``require_time`` (replays need one).
    A missing value (empty, ``NaN``, ``NA``, ``null``...) is an error unless ``allow_missing``, then it reads as NaN.
    """
    with open(path, newline="") as handle:
        header_line = handle.readline()
        delimiter = ";" if header_line.count(";") > header_line.count(",") else ","
        handle.seek(0)
        rows = list(csv.reader(handle, delimiter=delimiter))
    header = [name.strip() for name in rows[0]]
    numbered = [(line, row) for line, row in enumerate(rows[1:], start=2) if row]
    time_index = next((i for i, name in enumerate(header) if name.lower() in TIME_COLUMNS), None)
    if time_index is None and require_time:
        raise ValueError(f"{path}: no time column (one of {TIME_COLUMNS}) in header {header}")
    label_index = next((i for i, name in enumerate(header) if name.lower() in LABEL_COLUMNS), None)
    skipped = {time_index, label_index} | {i for i, name in enumerate(header) if name.lower() in IGNORED_COLUMNS}
    available = [name for i, name in enumerate(header) if i not in skipped]
    selected = available if channels is None else channels
    missing = [name for name in selected if name not in available]
    if missing:
        raise ValueError(f"{path}: channels {missing} not in columns {available}")
    indices = [header.index(name) for name in selected]
    parse = _value_or_nan if allow_missing else float
    parsed = []
    for line, row in numbered:
        try:
            parsed.append([parse(row[i]) for i in indices])
        except (ValueError, IndexError) as error:
            raise ValueError(f"{path}:{line}: {error}") from error
    values = np.array(parsed, dtype=dtype).reshape(-1, len(indices))
    body = [row for _, row in numbered]
    labels = None
    if label_index is not None:
        labels = np.array([float(row[label_index]) > 0.5 for row in body], dtype=np.int8)
    timestamps = [row[time_index] for row in body] if time_index is not None else [str(i) for i in range(len(body))]
    return SensorTable(timestamps=timestamps, channels=list(selected), values=values, labels=labels)


def _value_or_nan(text: str) -> float:
    return math.nan if text.strip().lower() in MISSING_VALUES else float(text)


def fill_missing(history: np.ndarray, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Each NaN takes its channel's last earlier value (``rows`` continue ``history`` in time), as a historian
    holds a sensor's last reading; NaNs before a channel's first value take that first value, a channel with none
    is 0. Only earlier rows fill a gap in ``rows``, so test scores stay causal."""
    joined = history if rows is None else np.concatenate([history, rows])
    if not np.isnan(joined).any():
        return history, rows
    filled = joined.copy()
    for channel in np.flatnonzero(np.isnan(joined).any(axis=0)):
        values = filled[:, channel]
        present = np.flatnonzero(~np.isnan(values))
        if present.size == 0:
            values[:] = 0.0
            continue
        last = np.maximum.accumulate(np.where(np.isnan(values), 0, np.arange(len(values))))
        last[: present[0]] = present[0]
        values[:] = values[last]
    return filled[: len(history)], None if rows is None else filled[len(history) :]


def write_table(path: Path, timestamps: list[str], channels: list[str], values: np.ndarray, labels=None) -> None:
    """Write the benchmark layout: ``timestamp``, channels, optional ``label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", *channels, *(["label"] if labels is not None else [])])
        for i, stamp in enumerate(timestamps):
            row = [stamp, *(repr(float(v)) for v in values[i])]
            if labels is not None:
                row.append(int(labels[i]))
            writer.writerow(row)


@dataclass
class Series:
    name: str
    train: SensorTable
    test: SensorTable | None


def read_benchmark(bench: Path, channels: list[str] | None = None) -> list[Series]:
    """Every ``<bench>/<series>/train.csv`` (with ``test.csv`` when present), sorted by series name. Every table
    is read with the same channels in the same order (``channels``, else the first train.csv's), whatever its column
    order; missing values are filled (``fill_missing``)."""
    series = []
    for train_path in sorted(Path(bench).glob("*/train.csv")):
        train = read_table(train_path, channels, allow_missing=True)
        channels = train.channels
        test_path = train_path.with_name("test.csv")
        test = read_table(test_path, channels, allow_missing=True) if test_path.exists() else None
        train_values, test_values = fill_missing(train.values, None if test is None else test.values)
        train = replace(train, values=train_values)
        test = None if test is None else replace(test, values=test_values)
        series.append(Series(name=train_path.parent.name, train=train, test=test))
    if not series:
        raise FileNotFoundError(f"no <series>/train.csv under {bench}")
    return series


def training_tables(data: Path, channels: list[str] | None = None) -> dict[str, SensorTable]:
    """Training data for ``train ts``: one csv (stream = file stem), a benchmark folder (stream = series; only
    train.csv), or a folder of csv files (stream = relative path without suffix; SKAB labelled rows dropped)."""
    data = Path(data)
    if data.is_file():
        return {data.stem: _normal_rows(_filled(read_table(data, channels, allow_missing=True)))}
    if any(data.glob("*/train.csv")):
        return {s.name: s.train for s in read_benchmark(data, channels)}
    tables = {}
    for path in sorted(data.rglob("*.csv")):
        table = _filled(read_table(path, channels, allow_missing=True))
        channels = table.channels
        tables[str(path.relative_to(data).with_suffix(""))] = _normal_rows(table)
    if not tables:
        raise FileNotFoundError(f"no csv files under {data}")
    return tables


def _filled(table: SensorTable) -> SensorTable:
    return replace(table, values=fill_missing(table.values)[0])


def _normal_rows(table: SensorTable) -> SensorTable:
    if table.labels is None:
        return table
    keep = table.labels == 0
    stamps = [s for s, k in zip(table.timestamps, keep, strict=True) if k]
    return SensorTable(stamps, table.channels, table.values[keep], None)


# A benchmark may carry ``anomalies.json`` at its root (written by ``diffsentry generate ts``): which model stream
# each series replays, and every labelled anomaly with its type and size, so that evaluation reports recall and
# delay per type and size.
MANIFEST_FILE = "anomalies.json"


@dataclass
class LabelledAnomaly:
    series: str
    kind: str  # spike | level_shift | drift | stuck | noise | correlation
    size: float | None  # in the channel's training standard deviations; None for a stuck sensor
    channel: str
    start: int  # first anomalous test row
    stop: int  # one past the last


def size_key(size: float | None) -> str:
    """A size as reports key it: ``4`` for 4 standard deviations, ``held`` for a stuck sensor."""
    return "held" if size is None else f"{size:g}"


@dataclass
class BenchManifest:
    streams: dict[str, str]  # series -> the stream id the model calibrated it as
    anomalies: list[LabelledAnomaly]
    settings: dict

    def write(self, bench: Path) -> None:
        data = {"streams": self.streams, "settings": self.settings, "anomalies": [asdict(a) for a in self.anomalies]}
        (Path(bench) / MANIFEST_FILE).write_text(json.dumps(data, indent=1))


def read_manifest(bench: Path) -> BenchManifest | None:
    path = Path(bench) / MANIFEST_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    anomalies = [LabelledAnomaly(**a) for a in data["anomalies"]]
    return BenchManifest(streams=data["streams"], anomalies=anomalies, settings=data["settings"])
