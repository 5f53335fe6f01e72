"""Labelled anomalies for a user's own plant, inpainted into its held-out normal rows (``diffsentry generate ts``).

Each stream's rows after the training cut (the rows the denoiser never saw) are replayed once per anomaly type and
size as one series of the benchmark layout: ``train.csv`` = the stream's fit rows (its past), ``test.csv`` = the
held-out rows with anomalies at fixed spacing, one sensor each, labelled. Sizes are in the channel's training
standard deviations (the model's normaliser):

- ``spike``: +-size on ``spike_rows`` rows;
- ``level_shift``: +-size for ``duration`` rows;
- ``drift``: a ramp from 0 to +-size over ``duration`` rows;
- ``stuck``: the sensor holds its last reading for ``duration`` rows (no size);
- ``noise``: added Gaussian noise of standard deviation ``size`` for ``duration`` rows;
- ``correlation``: one sensor is shifted by +-size and the trained model redraws the other sensors (DDIM
  imputation conditioned on the forced sensor and on everything before), as the plant it learned would respond;
  slow channels, judged by shape only, are kept.

The manifest (``data.BenchManifest``) names the stream each series replays, so an existing model scores it with
that stream's calibration (``evaluation.evaluate_model``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from triton_models.diffusion import ddim_sample
from triton_models.timeseries.data import BenchManifest, LabelledAnomaly, SensorTable, size_key, write_table
from triton_models.timeseries.detector import TimeSeriesDetector
from triton_models.timeseries.normalization import centre_slow_channels
from triton_models.timeseries.training import HOLDOUT_FRACTION, split_holdout

ANOMALY_KINDS = ("spike", "level_shift", "drift", "stuck", "noise", "correlation")
UNSIZED_KINDS = ("stuck",)


@dataclass
class GenerationSettings:
    kinds: tuple[str, ...] = ANOMALY_KINDS
    sizes: tuple[float, ...] = (2.0, 4.0, 8.0)
    duration: int = 60  # rows of every anomaly but spikes
    spike_rows: int = 1
    gap: int = 0  # normal rows between anomalies; 0 = twice the model window (an anomaly leaves the window first)
    seed: int = 0
    imputation_steps: int = 20  # DDIM steps of the correlation redraw

    def to_json(self) -> dict:
        return asdict(self)


def generate_benchmark(
    detector: TimeSeriesDetector, tables: dict[str, SensorTable], out: Path, settings: GenerationSettings
) -> BenchManifest:
    """Writes ``<out>/<series>/{train,test}.csv`` and ``<out>/anomalies.json``; returns the manifest."""
    for kind in settings.kinds:
        if kind not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly type {kind!r} ({' | '.join(ANOMALY_KINDS)})")
    rng = np.random.default_rng(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    gap = settings.gap or 2 * detector.config.window
    streams, anomalies = {}, []
    for stream, table in tables.items():
        cut = split_holdout(table.values, HOLDOUT_FRACTION)
        normalised = detector.normalizer.normalise(table.values, stream)
        for kind in settings.kinds:
            for size in (None,) if kind in UNSIZED_KINDS else settings.sizes:
                series = f"{_safe(stream)}__{kind}_{size_key(size)}"
                length = settings.spike_rows if kind == "spike" else settings.duration
                starts = list(range(max(gap, detector.config.window), len(table.values) - cut - length, length + gap))
                if not starts:
                    raise ValueError(f"{stream}: {len(table.values) - cut} held-out rows hold no anomaly of {length}")
                rows, placed = _inject(detector, normalised, cut, kind, size, length, starts, rng, generator, settings)
                center, scale = detector.normalizer.params(stream)
                values = (rows * scale + center).astype(np.float32)
                labels = np.zeros(len(values), dtype=np.int8)
                for start, _channel in placed:
                    labels[start : start + length] = 1
                stamps = table.timestamps
                write_table(out / series / "train.csv", stamps[:cut], table.channels, table.values[:cut])
                write_table(out / series / "test.csv", stamps[cut:], table.channels, values, labels)
                streams[series] = stream
                anomalies += [
                    LabelledAnomaly(series, kind, size, table.channels[c], start, start + length) for start, c in placed
                ]
    manifest = BenchManifest(streams, anomalies, {**settings.to_json(), "gap": gap})
    manifest.write(out)
    return manifest


def _safe(stream: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stream)


def _inject(
    detector: TimeSeriesDetector,
    normalised: np.ndarray,
    cut: int,
    kind: str,
    size: float | None,
    length: int,
    starts: list[int],
    rng: np.random.Generator,
    generator: torch.Generator,
    settings: GenerationSettings,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The normalised held-out rows with one anomaly at each of ``starts`` (test-row indices); returns them and the
    (start, channel) of each anomaly. Channels take turns in a shuffled order."""
    joined = normalised.copy()
    channels = joined.shape[1]
    order = rng.permutation(channels)
    placed = []
    for index, start in enumerate(starts):
        channel = int(order[index % channels])
        rows = slice(cut + start, cut + start + length)
        sign = rng.choice([-1.0, 1.0])
        if kind in ("spike", "level_shift", "correlation"):
            joined[rows, channel] += sign * size
        elif kind == "drift":
            joined[rows, channel] += sign * size * np.arange(1, length + 1) / length
        elif kind == "stuck":
            joined[rows, channel] = joined[cut + start - 1, channel]
        elif kind == "noise":
            joined[rows, channel] += size * rng.normal(size=length)
        placed.append((start, channel))
    if kind == "correlation":
        _redraw_others(detector, joined, [(cut + s, c) for s, c in placed], length, generator, settings)
    return joined[cut:], placed


def _redraw_others(
    detector: TimeSeriesDetector,
    joined: np.ndarray,
    events: list[tuple[int, int]],
    length: int,
    generator: torch.Generator,
    settings: GenerationSettings,
) -> None:
    """In place: over each event's rows, every channel but the forced one and the slow ones is imputed by the model
    from the window ending at the chunk (forced channel and all earlier rows observed), half a window at a time, so
    later chunks condition on the earlier redrawn ones. All events of a series advance together in one batch."""
    window = detector.config.window
    slow = detector.config.slow_channels
    chunk = max(1, window // 2)
    schedule = detector.schedule
    network = detector.scorer.network
    timesteps = schedule.ddim_timesteps(settings.imputation_steps)
    for offset in range(0, length, chunk):
        stop = min(offset + chunk, length)
        windows, masks = [], []
        for start, channel in events:
            end = start + stop
            windows.append(joined[end - window : end])
            mask = np.ones((window, joined.shape[1]), dtype=np.float32)
            hidden = [c for c in range(joined.shape[1]) if c != channel and c not in slow]
            mask[window - (stop - offset) :, hidden] = 0.0
            masks.append(mask)
        x0 = torch.from_numpy(centre_slow_channels(np.stack(windows).astype(np.float32), slow)).to(detector.device)
        mask_tensor = torch.from_numpy(np.stack(masks)).to(detector.device)
        noise = torch.randn(x0.shape, generator=generator).to(detector.device)

        def denoise(x_t: torch.Tensor, t: torch.Tensor, x0=x0, mask=mask_tensor) -> torch.Tensor:
            return network(x_t, t, x0, mask)

        with torch.no_grad():
            imputed = ddim_sample(denoise, schedule, noise, timesteps).cpu().numpy()
        for index, (start, _channel) in enumerate(events):
            end = start + stop
            hidden_rows = masks[index] == 0
            block = joined[end - window : end]
            block[hidden_rows] = imputed[index][hidden_rows]
