"""Synthetic plants in the benchmark layout (``<out>/<series>/train.csv``, ``test.csv``), for data unlike SKAB.

Every sensor is a sine (its own period of 40-250 rows and phase) plus 0.1 noise; anomalies hit one sensor each:

- ``offsets``: 3 series x 20 sensors, 20,000 train + 5,000 test rows; sensor 5 never moves; 1 % of the readings
  are missing (`nan` cells); 5 sustained offsets of 1.5-4 (a miscalibrated or drifting-off sensor) per series.
- ``shapes``: 3 series x 12 sensors, 12,000 train + 5,000 test rows; 8 anomalies per series whose level stays
  put: a tripled frequency, a noise burst, a stuck sensor, a collapsed amplitude.

    python benchmarks/synthetic_plant.py offsets --out /tmp/offsets
    diffsentry evaluate ts /tmp/offsets --out /tmp/offsets.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from triton_models.timeseries.data import write_table  # noqa: E402

KINDS = {"offsets": (20, 20_000, 5, 0), "shapes": (12, 12_000, 8, 1)}  # sensors, train rows, anomalies, seed
TEST_ROWS = 5_000


def _series(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    sensors, train_rows, anomalies, _ = KINDS[kind]
    t = np.arange(train_rows + TEST_ROWS)
    period = rng.uniform(40, 250, sensors)
    phase = rng.uniform(0, 2 * np.pi, sensors)
    clean = np.sin(t[:, None] * 2 * np.pi / period + phase)
    noise = 0.1 * rng.normal(size=clean.shape)
    values = clean + noise
    labels = np.zeros(TEST_ROWS, dtype=int)
    for index in range(anomalies):
        start = int(rng.integers(200, TEST_ROWS - 300))
        length = int(rng.integers(50, 250) if kind == "offsets" else rng.integers(40, 200))
        sensor = int(rng.integers(0, sensors))
        rows = slice(train_rows + start, train_rows + start + length)
        if kind == "offsets":
            values[rows, sensor] += rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 4.0)
        elif index % 4 == 0:
            values[rows, sensor] = (
                np.sin(t[rows] * 2 * np.pi / (period[sensor] / 3) + phase[sensor]) + noise[rows, sensor]
            )
        elif index % 4 == 1:
            values[rows, sensor] = clean[rows, sensor] + 0.6 * rng.normal(size=length)
        elif index % 4 == 2:
            values[rows, sensor] = values[train_rows + start - 1, sensor] + 0.01 * rng.normal(size=length)
        else:
            values[rows, sensor] = 0.2 * clean[rows, sensor] + noise[rows, sensor]
        labels[start : start + length] = 1
    if kind == "offsets":
        values[:, 5] = 3.0
        values[rng.random(values.shape) < 0.01] = np.nan
    return values, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rng = np.random.default_rng(KINDS[args.kind][3])
    train_rows = KINDS[args.kind][1]
    for index in range(3):
        values, labels = _series(args.kind, rng)
        sensors, stamps = [f"sensor{c:02d}" for c in range(values.shape[1])], [str(i) for i in range(len(values))]
        folder = args.out / f"{args.kind}-{index}"
        write_table(folder / "train.csv", stamps[:train_rows], sensors, values[:train_rows])
        write_table(folder / "test.csv", stamps[train_rows:], sensors, values[train_rows:], labels)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
