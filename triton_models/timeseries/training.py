"""DDPM training of the conditional denoiser on normal windows, then label-free calibration on held-out rows."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from triton_models.diffusion import NoiseSchedule, ddpm_loss
from triton_models.names import POOLED_STREAM, SCORE, TS_MODES
from triton_models.progress import progress_bar
from triton_models.timeseries.calibration import pot_threshold, stream_thresholds
from triton_models.timeseries.detector import (
    ModeCalibration,
    ModelConfig,
    StreamCalibration,
    TimeSeriesDetector,
    guarded_errors,
    level_envelope,
    spread_limits,
    unpredictable_flags,
    window_levels,
    window_scores,
    window_spreads,
)
from triton_models.timeseries.networks import ConvDenoiser
from triton_models.timeseries.normalization import (
    StreamNormalizer,
    centre_slow_channels,
    flag_channels,
    slow_channels,
)


def sliding_windows(values: np.ndarray, length: int, stride: int = 1, first_end: int | None = None) -> np.ndarray:
    """Windows [n, length, channels] of ``values`` ending at rows ``first_end, first_end + stride, ...``
    (default: the first row with a full window of history)."""
    start_end = length - 1 if first_end is None else max(first_end, length - 1)
    ends = np.arange(start_end, len(values), stride)
    if ends.size == 0:
        return np.empty((0, length, values.shape[1]), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0)  # [n, channels, length]
    return np.ascontiguousarray(view[ends - length + 1].transpose(0, 2, 1), dtype=np.float32)


def training_masks(batch: int, length: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    """Observation masks (1 = observed) mixing the shapes scoring uses: empty (reconstruction), hidden channel
    subsets, hidden time blocks, and random entries."""
    kind = torch.randint(0, 4, (batch,), generator=generator)
    masks = torch.ones(batch, length, channels)
    masks[kind == 0] = 0
    hidden_channels = torch.rand(batch, 1, channels, generator=generator) < torch.rand(batch, 1, 1, generator=generator)
    masks = torch.where((kind == 1)[:, None, None] & hidden_channels, torch.zeros(()), masks)
    block_length = torch.randint(1, length, (batch,), generator=generator)
    block_start = (torch.rand(batch, generator=generator) * (length - block_length + 1)).long()
    steps = torch.arange(length)[None]
    in_block = (steps >= block_start[:, None]) & (steps < (block_start + block_length)[:, None])
    masks = torch.where((kind == 2)[:, None, None] & in_block[:, :, None], torch.zeros(()), masks)
    ratio = torch.rand(batch, 1, 1, generator=generator) * 0.8 + 0.1
    random_hidden = torch.rand(batch, length, channels, generator=generator) < ratio
    masks = torch.where((kind == 3)[:, None, None] & random_hidden, torch.zeros(()), masks)
    # A mask that hides nothing teaches nothing: hide everything instead.
    masks[masks.flatten(1).all(dim=1)] = 0
    return masks


# An epoch draws at most this many training windows (a fresh random subset each epoch), so training time is bounded
# on large data sets (SKAB has 16,169 windows: all of them every epoch).
EPOCH_WINDOWS = 32_768


def train_denoiser(
    network: ConvDenoiser,
    schedule: NoiseSchedule,
    windows: np.ndarray,
    epochs: int,
    seed: int,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    progress: bool = True,
    epoch_windows: int = EPOCH_WINDOWS,
) -> list[float]:
    """Adam on the masked epsilon loss; deterministic for a given seed and thread count. Returns loss per epoch."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(windows)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    per_epoch = min(len(data), epoch_windows)
    total_steps = epochs * max(1, -(-per_epoch // batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=total_steps)
    network.train()
    losses = []
    bar = progress_bar(range(epochs), desc="train ts diffusion", unit="epoch", disable=not progress)
    for _ in bar:
        order = torch.randperm(len(data), generator=generator)[:per_epoch]
        total, count = 0.0, 0
        for batch_index in order.split(batch_size):
            x0 = data[batch_index]
            mask = training_masks(len(x0), x0.shape[1], x0.shape[2], generator)

            def denoise(x_t: torch.Tensor, t: torch.Tensor, x0=x0, mask=mask) -> torch.Tensor:
                return network(x_t, t, x0, mask)

            loss = ddpm_loss(denoise, schedule, x0, generator, weight=1 - mask)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(x0)
            count += len(x0)
        losses.append(total / count)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    network.eval()
    return losses


@dataclass
class FitReport:
    losses: list[float]
    train_windows: int
    calibration_windows: int
    # served (calibrated) scores of the held-out windows, per mode and stream, in time order
    calibration_scores: dict[str, dict[str, np.ndarray]]
    rows: dict[str, int]


# The last quarter of each stream's training rows is held out from the denoiser, for calibration.
HOLDOUT_FRACTION = 0.25


def split_holdout(values: np.ndarray, fraction: float) -> int:
    """Index of the first held-out row: the last ``fraction`` of each stream's training rows."""
    return round(len(values) * (1 - fraction))


# Fewer held-out windows than this give no usable median/MAD: such a stream gets the pooled default calibration.
MIN_STREAM_WINDOWS = 20
# A channel's scale is at least this fraction of the stream's mean channel scale: a channel that happened to be
# flat in a short held-out tail would otherwise turn its first harmless wiggle into a huge score.
CHANNEL_SCALE_FLOOR = 0.1


@dataclass
class NormalWindows:
    """What calibration takes from one stream's normal windows: the model's absolute errors [windows, length,
    channels], the windows' levels and spreads [windows, channels] (``window_levels``, ``window_spreads``)."""

    errors: np.ndarray
    levels: np.ndarray
    spreads: np.ndarray


def pooled_windows(streams: dict[str, NormalWindows]) -> NormalWindows:
    """The windows of every stream as one set (the pooled ``default`` calibration)."""
    return NormalWindows(
        *(np.concatenate([getattr(windows, key.name) for windows in streams.values()]) for key in fields(NormalWindows))
    )


# Calibration also scores every this many windows of the fit rows (``stream_thresholds``): overlapping windows
# repeat each other, and a quarter of them show the same operating points at a quarter of the scoring time.
FIT_WINDOW_STRIDE = 4


def calibrate_mode(
    held_out: dict[str, NormalWindows],
    risk: float,
    unscored: dict[str, list[int]] | None = None,
    fit: dict[str, NormalWindows] | None = None,
) -> tuple[ModeCalibration, dict[str, np.ndarray]]:
    """Per-stream calibration from each stream's held-out normal windows: per-stream channel scale, then per-stream
    thresholds from one pooled tail model (``stream_thresholds``), raised where the stream's ``fit`` windows (the
    rows the model was trained on) score higher; ``unscored`` channels per stream (``unpredictable_flags``) stay out
    of the scores, and unknown streams leave out those no stream scores. Returns the calibration and the served
    scores of each stream's held-out windows (1.0 = threshold), in time order."""
    unscored = {name: (unscored or {}).get(name, []) for name in held_out}
    fit = fit or {}
    pooled_unscored = sorted(set.intersection(*map(set, unscored.values())))
    pooled = pooled_windows(held_out)
    pooled_scale = np.maximum(pooled.errors.mean(axis=(0, 1)), 1e-8)
    pooled_envelope = level_envelope(pooled.levels, risk, pooled_unscored)

    def raw_scores(windows: NormalWindows, scale: np.ndarray, envelope: float, skipped: list[int]) -> np.ndarray:
        return window_scores(guarded_errors(windows.errors, scale, windows.levels, envelope, skipped))[SCORE]

    pooled_scores = raw_scores(pooled, pooled_scale, pooled_envelope, pooled_unscored)
    default_threshold = pot_threshold(pooled_scores, risk)
    if fit:
        pooled_fit = pooled_windows(fit)
        fit_threshold = pot_threshold(raw_scores(pooled_fit, pooled_scale, pooled_envelope, pooled_unscored), risk)
        default_threshold = max(default_threshold, fit_threshold, key=lambda threshold: threshold.value)
    scales, envelopes, scores, fit_scores = {}, {}, {}, {}
    for name, windows in held_out.items():
        if len(windows.errors) < MIN_STREAM_WINDOWS:
            continue
        scale = windows.errors.mean(axis=(0, 1))
        scales[name] = np.maximum(scale, max(CHANNEL_SCALE_FLOOR * scale.mean(), 1e-8))
        envelopes[name] = level_envelope(windows.levels, risk, unscored[name])
        scores[name] = raw_scores(windows, scales[name], envelopes[name], unscored[name])
        if name in fit:
            fit_scores[name] = raw_scores(fit[name], scales[name], envelopes[name], unscored[name])
    default = StreamCalibration(
        pooled_scale.tolist(),
        float(np.median(pooled_scores)),
        default_threshold.value,
        pooled_envelope,
        pooled_unscored,
        spread_limits(pooled.spreads, risk, pooled_unscored),
    )
    streams = {POOLED_STREAM: default}
    tail = None
    if scores:
        fitted = stream_thresholds(scores, risk, fit_scores)
        streams |= {
            name: StreamCalibration(
                scales[name].tolist(),
                fitted.locations[name],
                fitted.thresholds[name],
                envelopes[name],
                unscored[name],
                spread_limits(held_out[name].spreads, risk, unscored[name]),
            )
            for name in scores
        }
        tail = fitted.tail
    calibration = ModeCalibration(streams, default_threshold, tail)
    served = {
        name: window_scores(calibration.stream(name).serve(w.errors, w.levels, w.spreads))[SCORE]
        for name, w in held_out.items()
    }
    return calibration, served


def fit_detector(
    tables: dict[str, np.ndarray],
    config: ModelConfig,
    epochs: int,
    holdout_fraction: float = HOLDOUT_FRACTION,
    risk: float = 1e-3,
    progress: bool = True,
) -> tuple[TimeSeriesDetector, FitReport]:
    """Normalise per stream on its fit rows, train on their windows, calibrate every mode per stream on the
    held-out rows (each held-out window may reach back into fit rows: that is the stream's past), the thresholds
    raised where the fit rows' windows score higher (``calibrate_mode``)."""
    torch.manual_seed(config.seed)
    cuts = {name: split_holdout(values, holdout_fraction) for name, values in tables.items()}
    fit_rows = {name: values[: cuts[name]] for name, values in tables.items()}
    normalizer = StreamNormalizer.fit(fit_rows)
    normalised = {name: normalizer.normalise(values, name) for name, values in tables.items()}
    config.slow_channels = slow_channels(
        {name: v[: cuts[name]] for name, v in normalised.items()},
        {name: v[cuts[name] :] for name, v in normalised.items()},
        block=4 * config.window,
    )
    train = np.concatenate(
        [sliding_windows(v[: cuts[name]], config.window, config.stride) for name, v in normalised.items()]
    )
    train = centre_slow_channels(train, config.slow_channels)
    held_out = {name: sliding_windows(v, config.window, 1, first_end=cuts[name]) for name, v in normalised.items()}
    held_out = {name: windows for name, windows in held_out.items() if len(windows)}
    network = TimeSeriesDetector.build_network(config)
    network.prior.fit(train, flag_channels(np.concatenate(list(fit_rows.values()))))
    schedule = NoiseSchedule(config.diffusion_steps, config.schedule)
    losses = train_denoiser(network, schedule, train, epochs, config.seed, progress=progress)
    detector = TimeSeriesDetector(config, network, normalizer)
    calibration_scores = {}
    fit_windows = {
        name: sliding_windows(normalised[name][: cuts[name]], config.window, FIT_WINDOW_STRIDE) for name in held_out
    }
    fit_windows = {name: windows for name, windows in fit_windows.items() if len(windows)}
    flags = {name: flag_channels(fit_rows[name]) for name in held_out}  # as the normaliser saw them

    def levels_and_spreads(windows: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {name: (window_levels(w, config.slow_channels), window_spreads(w)) for name, w in windows.items()}

    held_shapes, fit_shapes = levels_and_spreads(held_out), levels_and_spreads(fit_windows)  # the same in every mode
    for mode in progress_bar(TS_MODES, desc="calibrate", disable=not progress):
        held = {
            name: NormalWindows(batched_errors(detector, w, mode, False), *held_shapes[name])
            for name, w in held_out.items()
        }
        fit = {
            name: NormalWindows(batched_errors(detector, w, mode, False), *fit_shapes[name])
            for name, w in fit_windows.items()
        }
        unscored = {name: unpredictable_flags(held[name].errors, w, flags[name]) for name, w in held_out.items()}
        detector.calibration[mode], calibration_scores[mode] = calibrate_mode(held, risk, unscored, fit)
    held_out_count = sum(len(w) for w in held_out.values())
    report = FitReport(losses, len(train), held_out_count, calibration_scores, {n: len(v) for n, v in tables.items()})
    return detector, report


def batched_errors(
    detector: TimeSeriesDetector, normalised_windows: np.ndarray, mode: str, progress: bool, batch: int = 512
) -> np.ndarray:
    """Absolute errors [windows, length, channels] of normalised windows, in batches."""
    parts = [
        detector.absolute_errors(normalised_windows[i : i + batch], mode)
        for i in progress_bar(range(0, len(normalised_windows), batch), desc=mode, leave=False, disable=not progress)
    ]
    return np.concatenate(parts) if parts else np.empty_like(normalised_windows)
