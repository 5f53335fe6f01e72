"""Synthetic plants in the benchmark layout (``<out>/<series>/train.csv``, ``test.csv``), for data unlike SKAB.

Every sensor is a sine (its own period of 40-250 rows and phase) plus 0.1 noise; anomalies hit one sensor each:

- ``offsets``: 3 series x 20 sensors, 20,000 train + 5,000 test rows; sensor 5 never moves; 1 % of the readings
  are missing (`nan` cells); 5 sustained offsets of 1.5-4 (a miscalibrated or drifting-off sensor) per series.
- ``shapes``: 3 series x 12 sensors, 12,000 train + 5,000 test rows; 8 anomalies per series whose level stays
  put: a tripled frequency, a noise burst, a stuck sensor, a collapsed amplitude.

Harder plants for the cross-plant suite (``benchmarks/ts_suite.py``), 2 series each, 3,000 test rows: sensors are
mixtures of 3 latent sines (periods 40-250) plus 0.1 noise, so they are correlated as a plant's are; 6 anomalies
per series, one sensor each, taking turns among sustained offsets (+-1.5-4 sensor sd), stuck sensors and broken
correlations (the sensor follows another sensor's mixture, rescaled to its own mean and sd: its level and spread
stay put):

- ``drift``: 8 sensors, 6,000 train rows; in the test period every sensor's normal level drifts slowly, up to
  +-0.5 of its sd by the end (normal operation moved on; not labelled);
- ``few_rows``: 8 sensors, 500 train rows;
- ``wide``: 60 sensors, 4,000 train rows;
- ``wide_few``: 52 sensors, 500 train rows (the shape of a process plant's short reference run);
- ``binary``: 4 analog + 6 binary sensors (on/off flags, each switching with its own latent sine's sign), 6,000
  train rows; anomalies also include a flag flipped against its latent for the anomaly's rows.

``commands``, telemetry of the spacecraft kind: 3 series, each 1 analog sensor (two sines, periods 40-250, plus 0.1
noise) and 24 command flags that are off but for rare bursts of 1-20 rows at random times, unrelated to the analog
sensor (each flag its own rate; 6 of them never fire in the 2,000 training rows and do in the 3,000 test rows, as
new commands do); 6 anomalies per series, all on the analog sensor, taking turns among offsets (1.5-4 sd), stuck,
noise bursts (+0.6 sd) and a tripled frequency. A command firing is normal operation: the detector must not alarm
on the flags and must still see the analog sensor.

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
# Mixture plants: sensors, binary sensors, train rows, test drift (sd), seed
MIXTURES = {
    "drift": (8, 0, 6_000, 0.5, 2),
    "few_rows": (8, 0, 500, 0.0, 3),
    "wide": (60, 0, 4_000, 0.0, 4),
    "binary": (4, 6, 6_000, 0.0, 5),
    "wide_few": (52, 0, 500, 0.0, 7),
}
MIXTURE_TEST_ROWS = 3_000
COMMANDS = (24, 6, 2_000, 3_000, 6)  # command flags, of which dormant in training, train rows, test rows, seed
MIXTURE_ANOMALIES = 6
LATENTS = 3


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


def _mixture_series(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Values [train + test rows, sensors], test labels, train rows of one mixture-plant series."""
    analog, binary, train_rows, drift, _ = MIXTURES[kind]
    rows = train_rows + MIXTURE_TEST_ROWS
    t = np.arange(rows)
    latent = np.sin(t[:, None] * 2 * np.pi / rng.uniform(40, 250, LATENTS) + rng.uniform(0, 2 * np.pi, LATENTS))
    mixing = rng.normal(size=(LATENTS, analog))
    analog_values = latent @ mixing + 0.1 * rng.normal(size=(rows, analog))
    flag_latent = rng.integers(0, LATENTS, binary)
    flag_phase = rng.uniform(-0.5, 0.5, binary)
    flags = (latent[:, flag_latent] > flag_phase).astype(float)
    values = np.concatenate([analog_values, flags], axis=1)
    sensors = analog + binary
    values[train_rows:, :analog] += (
        drift
        * values[:train_rows, :analog].std(axis=0)
        * np.linspace(0, 1, rows - train_rows)[:, None]
        * rng.choice([-1.0, 1.0], analog)
    )
    labels = np.zeros(MIXTURE_TEST_ROWS, dtype=int)
    spacing = MIXTURE_TEST_ROWS // MIXTURE_ANOMALIES
    kinds = ["offset", "stuck", "correlation"] + (["flag"] if binary else [])
    for index in range(MIXTURE_ANOMALIES):
        start = index * spacing + int(rng.integers(100, spacing - 250))
        length = int(rng.integers(50, 200))
        rows_hit = slice(train_rows + start, train_rows + start + length)
        anomaly = kinds[index % len(kinds)]
        sensor = int(rng.integers(analog, sensors) if anomaly == "flag" else rng.integers(0, analog))
        spread = values[:train_rows, sensor].std()
        if anomaly == "offset":
            values[rows_hit, sensor] += rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 4.0) * spread
        elif anomaly == "stuck":
            values[rows_hit, sensor] = values[train_rows + start - 1, sensor]
        elif anomaly == "correlation":
            other = latent[rows_hit] @ rng.normal(size=LATENTS)
            normal = values[:train_rows, sensor]
            values[rows_hit, sensor] = normal.mean() + normal.std() * (other - other.mean()) / max(other.std(), 1e-6)
        else:
            values[rows_hit, sensor] = 1.0 - values[rows_hit, sensor]
        labels[start : start + length] = 1
    return values, labels, train_rows


def _commands_series(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Values [train + test rows, 1 + flags], test labels, train rows of one ``commands`` series."""
    flags, dormant, train_rows, test_rows, _ = COMMANDS
    rows = train_rows + test_rows
    t = np.arange(rows)
    period, phase = rng.uniform(40, 250, 2), rng.uniform(0, 2 * np.pi, 2)
    clean = np.sin(t[:, None] * 2 * np.pi / period + phase).sum(axis=1)
    noise = 0.1 * rng.normal(size=rows)
    analog = clean + noise
    commands = np.zeros((rows, flags))
    for flag in range(flags):
        first = train_rows if flag < dormant else 0
        for start in rng.integers(first, rows, int(rng.integers(2, 12))):
            commands[start : start + int(rng.integers(1, 21)), flag] = 1.0
    spread = analog[:train_rows].std()
    labels = np.zeros(test_rows, dtype=int)
    spacing = test_rows // MIXTURE_ANOMALIES
    for index in range(MIXTURE_ANOMALIES):
        start = index * spacing + int(rng.integers(100, spacing - 250))
        length = int(rng.integers(50, 200))
        hit = slice(train_rows + start, train_rows + start + length)
        anomaly = index % 4
        if anomaly == 0:
            analog[hit] += rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 4.0) * spread
        elif anomaly == 1:
            analog[hit] = analog[train_rows + start - 1]
        elif anomaly == 2:
            analog[hit] += 0.6 * spread * rng.normal(size=length)
        else:
            analog[hit] = np.sin(t[hit, None] * 2 * np.pi / (period / 3) + phase).sum(axis=1) + noise[hit]
        labels[start : start + length] = 1
    return np.concatenate([analog[:, None], commands], axis=1), labels, train_rows


def write_plant(kind: str, out: Path) -> None:
    """Writes the plant ``kind`` (``KINDS``, ``MIXTURES`` or ``commands``) in the benchmark layout under ``out``."""
    mixture = kind in MIXTURES
    seed = MIXTURES[kind][4] if mixture else COMMANDS[4] if kind == "commands" else KINDS[kind][3]
    rng = np.random.default_rng(seed)
    for index in range(2 if mixture else 3):
        if mixture:
            values, labels, train_rows = _mixture_series(kind, rng)
        elif kind == "commands":
            values, labels, train_rows = _commands_series(rng)
        else:
            (values, labels), train_rows = _series(kind, rng), KINDS[kind][1]
        sensors, stamps = [f"sensor{c:02d}" for c in range(values.shape[1])], [str(i) for i in range(len(values))]
        folder = out / f"{kind}-{index}"
        write_table(folder / "train.csv", stamps[:train_rows], sensors, values[:train_rows])
        write_table(folder / "test.csv", stamps[train_rows:], sensors, values[train_rows:], labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted({**KINDS, **MIXTURES, "commands": COMMANDS}))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    write_plant(args.kind, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
