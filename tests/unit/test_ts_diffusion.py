"""Schedules, DDIM sampler, masks, scoring determinism, normalisation and persistence of the time-series model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from triton_models.diffusion import NoiseSchedule, ddim_sample, ddpm_loss
from triton_models.timeseries.detector import ModelConfig, TimeSeriesDetector
from triton_models.timeseries.networks import FlagPrior
from triton_models.timeseries.normalization import StreamNormalizer, centre_slow_channels, slow_channels
from triton_models.timeseries.scoring import ScoringConfig, complementary_masks
from triton_models.timeseries.training import fit_detector, sliding_windows, training_masks


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_schedule_is_a_decreasing_signal_fraction(kind: str) -> None:
    schedule = NoiseSchedule(50, kind)
    abar = schedule.alpha_bars
    assert abar.shape == (50,)
    assert torch.all(abar[1:] < abar[:-1])
    assert 0.9 < abar[0] < 1 and 0 <= abar[-1] < 0.1


def test_ddim_timesteps_decrease_to_zero_from_the_start_step() -> None:
    schedule = NoiseSchedule(100)
    assert schedule.ddim_timesteps(5) == [99, 74, 50, 25, 0]
    assert schedule.ddim_timesteps(4, start_step=39) == [39, 26, 13, 0]
    assert schedule.ddim_timesteps(10, start_step=2) == [2, 1, 0]
    with pytest.raises(ValueError):
        schedule.ddim_timesteps(3, start_step=100)


def test_predict_x0_inverts_q_sample() -> None:
    schedule = NoiseSchedule(100)
    x0, noise = torch.randn(4, 6, 3), torch.randn(4, 6, 3)
    t = torch.tensor([0, 10, 50, 99])
    x_t = schedule.q_sample(x0, t, noise)
    assert x_t.shape == x0.shape
    torch.testing.assert_close(schedule.predict_x0(x_t, t, noise), x0, atol=1e-3, rtol=1e-3)


def _toy_denoiser(dim: int) -> nn.Module:
    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(dim + 1, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, dim)
            )

        def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.net(torch.cat([x, t[:, None].float() / 50], dim=1))

    return Mlp()


def test_ddim_is_deterministic_and_independent_of_batch_composition() -> None:
    torch.manual_seed(0)
    model = _toy_denoiser(2)
    schedule = NoiseSchedule(50)
    start = torch.randn(6, 2)
    steps = schedule.ddim_timesteps(5)
    together = ddim_sample(model, schedule, start, steps)
    alone = torch.cat([ddim_sample(model, schedule, start[i : i + 1], steps) for i in range(6)])
    torch.testing.assert_close(together, ddim_sample(model, schedule, start, steps))
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddpm_training_and_ddim_sampling_learn_a_toy_distribution(kind: str) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    schedule = NoiseSchedule(50, kind)
    model = _toy_denoiser(2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    mean, std = torch.tensor([2.0, -1.0]), torch.tensor([0.3, 0.5])
    for _ in range(600):
        x0 = mean + std * torch.randn(256, 2, generator=generator)
        loss = ddpm_loss(model, schedule, x0, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    samples = ddim_sample(model, schedule, torch.randn(2000, 2, generator=generator), schedule.ddim_timesteps(20))
    assert torch.allclose(samples.mean(0), mean, atol=0.15)
    # deterministic DDIM with a small, briefly trained model shrinks the spread somewhat
    assert torch.allclose(samples.std(0), std, rtol=0.35)


@pytest.mark.parametrize(("kind", "families", "count"), [("time", 1, 4), ("channel", 1, 3), ("both", 2, 7)])
def test_complementary_masks_hide_every_entry_once_per_family(kind: str, families: int, count: int) -> None:
    masks = complementary_masks(kind, length=10, channels=3, time_groups=4, channel_groups=0)
    assert masks.shape == (count, 10, 3)
    assert torch.all((1 - masks).sum(0) == families)
    assert torch.all((1 - masks).flatten(1).sum(1) > 0)


def test_channel_groups_partition_channels() -> None:
    masks = complementary_masks("channel", length=4, channels=5, time_groups=1, channel_groups=2)
    assert masks.shape == (2, 4, 5)
    assert masks[0, 0].tolist() == [0, 1, 0, 1, 0]


def test_training_masks_are_binary_and_always_hide_something() -> None:
    masks = training_masks(500, 16, 4, torch.Generator().manual_seed(1))
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert torch.all((1 - masks).flatten(1).sum(1) > 0)
    assert (masks.flatten(1).sum(1) == 0).any() and (masks.flatten(1).sum(1) > 0).any()


def test_sliding_windows_end_at_requested_rows() -> None:
    values = np.arange(20, dtype=np.float32).reshape(10, 2)
    windows = sliding_windows(values, 4, 1, first_end=6)
    assert windows.shape == (4, 4, 2)
    assert windows[0, -1, 0] == 12 and windows[-1, -1, 0] == 18 and windows[0, 0, 0] == 6


def test_normaliser_uses_default_for_unknown_streams_and_survives_json() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(5, 2, (200, 3)), rng.normal(-1, 0.5, (200, 3))
    normalizer = StreamNormalizer.fit({"a": a, "b": b})
    assert abs(normalizer.normalise(a, "a").std() - 1) < 0.05
    restored = StreamNormalizer.from_json(normalizer.to_json())
    np.testing.assert_allclose(restored.normalise(b, "unknown"), normalizer.normalise(b, "default"))
    constant = StreamNormalizer.fit({"c": np.ones((50, 2))})
    assert np.all(np.isfinite(constant.normalise(np.ones((3, 2)), "c")))


def test_a_flag_switching_is_at_most_two_units_however_rarely_it_fired_in_training() -> None:
    rng = np.random.default_rng(0)
    rows = np.zeros((500, 4))
    rows[:, 0] = rng.normal(10, 2, 500)  # a sensor: scaled by its standard deviation
    rows[[17, 18, 300], 1] = 1.0  # a command flag that fired three times
    rows[:, 3] = 4.0  # a constant setting: scaled by its magnitude
    normalizer = StreamNormalizer.fit({"s": rows})  # column 2: a flag that never fired
    fired = normalizer.normalise(np.array([[10.0, 1.0, 1.0, 5.0]]), "s")[0]
    assert fired[1] == pytest.approx(2.0) and fired[2] == pytest.approx(2.0) and fired[3] == pytest.approx(0.5)
    half_the_time = StreamNormalizer.fit({"h": np.arange(100)[:, None] % 2 * 1.0})
    assert half_the_time.params("h")[1][0] == pytest.approx(0.5)  # the standard deviation, as for any channel
    assert normalizer.params("s")[1][0] == pytest.approx(rows[:, 0].std())


def test_slowly_wandering_channels_are_found_and_judged_by_shape_only() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(400)
    tables = {
        name: np.stack(
            [
                rng.normal(size=400),  # sensor noise: von Neumann ratio ~2
                steps / 100 + 0.05 * rng.normal(size=400),  # a level warming up: ratio ~0, never comes back
                np.sin(steps / 5) + 0.05 * rng.normal(size=400),  # smooth oscillation: ratio ~0, but comes back
            ],
            axis=1,
        )
        for name in ("a", "b", "c")
    }
    fit, held_out = {n: t[:300] for n, t in tables.items()}, {n: t[300:] for n, t in tables.items()}
    assert slow_channels(fit, held_out, block=100) == [1]
    assert slow_channels(fit, {}, block=100) == []
    # A noisy channel whose level wanders over thousands of rows is not smooth within blocks: it keeps its level.
    long = np.stack([rng.normal(size=4000) + np.sin(np.arange(4000) / 600) * 2, np.arange(4000) / 1000], axis=1)
    assert slow_channels({"long": long[:3000]}, {"long": long[3000:]}, block=100) == [1]
    windows = rng.normal(size=(5, 8, 3)) + np.array([10.0, 20.0, 30.0])
    centred = centre_slow_channels(windows, [1])
    np.testing.assert_allclose(centred[:, :, 1].mean(axis=1), 0, atol=1e-9)
    np.testing.assert_allclose(np.diff(centred[:, :, 1], axis=1), np.diff(windows[:, :, 1], axis=1))
    np.testing.assert_array_equal(centred[:, :, [0, 2]], windows[:, :, [0, 2]])
    assert centre_slow_channels(windows, []) is windows


@pytest.fixture(scope="module")
def tiny_detector() -> TimeSeriesDetector:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    steps = np.arange(300)[:, None]
    tables = {
        "pump-a": np.sin(steps / 5 + np.arange(3)) + 0.05 * rng.normal(size=(300, 3)),
        "pump-b": 10 + 2 * np.cos(steps / 7 + np.arange(3)) + 0.05 * rng.normal(size=(300, 3)),
    }
    scoring = ScoringConfig(imputation_steps=3, reconstruction_steps=2, chunk=3)
    config = ModelConfig(["x", "y", "z"], window=8, hidden=8, dilations=(1, 2), diffusion_steps=20, scoring=scoring)
    detector, _ = fit_detector({k: v.astype(np.float32) for k, v in tables.items()}, config, epochs=8, progress=False)
    return detector


@pytest.mark.parametrize("mode", ["imputation", "reconstruction"])
def test_scores_do_not_depend_on_batch_composition(tiny_detector: TimeSeriesDetector, mode: str) -> None:
    windows = np.random.default_rng(1).normal(size=(7, 8, 3)).astype(np.float32)
    streams = ["pump-a", "pump-b", "nobody", "pump-a", "pump-b", "pump-a", "pump-a"]
    together = tiny_detector.score(windows, streams, [mode] * 7)
    for i in range(7):
        alone = tiny_detector.score(windows[i : i + 1], streams[i : i + 1], [mode])
        for name in ("SCORE", "STEP_SCORES", "CHANNEL_SCORES"):
            np.testing.assert_allclose(alone[name][0], together[name][i], rtol=1e-5, atol=1e-6)
    assert together["SCORE"].shape == (7,)
    assert together["STEP_SCORES"].shape == (7, 8) and together["CHANNEL_SCORES"].shape == (7, 3)
    np.testing.assert_allclose(together["STEP_SCORES"].mean(1), together["SCORE"], rtol=1e-5, atol=1e-5)


def test_mixed_modes_in_one_batch_match_single_mode_batches(tiny_detector: TimeSeriesDetector) -> None:
    windows = np.random.default_rng(2).normal(size=(4, 8, 3)).astype(np.float32)
    modes = ["imputation", "reconstruction", "reconstruction", "imputation"]
    mixed = tiny_detector.score(windows, ["pump-a"] * 4, modes)
    for i, mode in enumerate(modes):
        single = tiny_detector.score(windows[i : i + 1], ["pump-a"], [mode])
        np.testing.assert_allclose(single["SCORE"][0], mixed["SCORE"][i], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown mode"):
        tiny_detector.score(windows, ["pump-a"] * 4, ["forecast"] * 4)


def test_anomalous_window_scores_higher_than_normal(tiny_detector: TimeSeriesDetector) -> None:
    steps = np.arange(100, 108)[:, None]
    normal = (np.sin(steps / 5 + np.arange(3))).astype(np.float32)[None]
    broken = normal.copy()
    broken[0, 4:, 1] += 3.0
    for mode in ("imputation", "reconstruction"):
        scores = tiny_detector.score(np.concatenate([normal, broken]), ["pump-a"] * 2, [mode] * 2)
        assert scores["SCORE"][1] > scores["SCORE"][0]


@pytest.mark.parametrize("mode", ["imputation", "reconstruction"])
def test_a_shift_spanning_the_whole_window_alarms(tiny_detector: TimeSeriesDetector, mode: str) -> None:
    steps = np.arange(100, 108)[:, None]
    normal = (np.sin(steps / 5 + np.arange(3))).astype(np.float32)[None]
    shifted = normal.copy()
    shifted[0, :, 1] += 6 * tiny_detector.normalizer.params("pump-a")[1][1]  # six training std, every step
    scores = tiny_detector.score(np.concatenate([normal, shifted]), ["pump-a"] * 2, [mode] * 2)
    assert scores["SCORE"][0] < 1.0 < scores["SCORE"][1]
    assert scores["CHANNEL_SCORES"][1].argmax() == 1


def test_saved_detector_reloads_with_identical_scores(tiny_detector: TimeSeriesDetector, tmp_path) -> None:
    tiny_detector.save(tmp_path / "model")
    restored = TimeSeriesDetector.load(tmp_path / "model", device="cpu")
    windows = np.random.default_rng(3).normal(size=(3, 8, 3)).astype(np.float32)
    for mode in ("imputation", "reconstruction"):
        a = tiny_detector.score(windows, ["pump-b"] * 3, [mode] * 3)["SCORE"]
        b = restored.score(windows, ["pump-b"] * 3, [mode] * 3)["SCORE"]
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert restored.calibration.keys() == {"imputation", "reconstruction"}
    calibration = restored.calibration["imputation"]
    assert calibration.streams.keys() == {"default", "pump-a", "pump-b"}
    assert calibration.served_threshold().value == 1.0 and calibration.stream("nobody").threshold > 0


def test_a_detector_saved_by_another_version_is_refused_with_a_clear_error(
    tiny_detector: TimeSeriesDetector, tmp_path
) -> None:
    tiny_detector.save(tmp_path / "model")
    path = tmp_path / "model" / "detector.json"
    state = json.loads(path.read_text())
    for stream in state["calibration"]["reconstruction"]["streams"].values():
        del stream["level_envelope"]  # calibrated before the level guard had an envelope
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"another version of the detector.*retrain the model"):
        TimeSeriesDetector.load(tmp_path / "model", device="cpu")


def test_served_scores_alarm_above_one_on_each_streams_own_scale(tiny_detector: TimeSeriesDetector) -> None:
    # Imputation only: the 8-epoch reconstruction of the tiny model is nearly input-independent (every score ~1.0).
    rng = np.random.default_rng(4)
    steps = np.arange(400, 440)[:, None]
    streams = {
        "pump-a": np.sin(steps / 5 + np.arange(3)) + 0.05 * rng.normal(size=(40, 3)),
        "pump-b": 10 + 2 * np.cos(steps / 7 + np.arange(3)) + 0.05 * rng.normal(size=(40, 3)),
    }
    for stream, values in streams.items():
        normal = np.lib.stride_tricks.sliding_window_view(values, 8, axis=0).transpose(0, 2, 1).astype(np.float32)
        broken = normal.copy()
        broken[:, 4:] += 10 * values.std(axis=0)
        normal_scores = tiny_detector.score(normal, [stream] * len(normal), ["imputation"] * len(normal))["SCORE"]
        broken_scores = tiny_detector.score(broken, [stream] * len(broken), ["imputation"] * len(broken))["SCORE"]
        assert np.median(normal_scores) < 1.0 < np.min(broken_scores), stream


def test_reconstruction_scores_the_mean_of_its_noise_draws(tiny_detector: TimeSeriesDetector) -> None:
    scorer = tiny_detector.scorer
    draws = scorer.reconstruction_noise
    assert draws.shape[0] == tiny_detector.config.scoring.reconstruction_samples > 1
    windows = torch.from_numpy(np.random.default_rng(2).normal(size=(5, 8, 3)).astype(np.float32))
    t = torch.full((5,), scorer.reconstruction_start, dtype=torch.long)
    empty = torch.zeros_like(windows)
    one_by_one = [
        ddim_sample(
            lambda x_t, step: scorer.network(x_t, step, empty, empty),
            scorer.schedule,
            scorer.schedule.q_sample(windows, t, draw.expand_as(windows)),
            scorer.reconstruction_timesteps,
        )
        for draw in draws
    ]
    expected = (torch.stack(one_by_one).mean(0) - windows) ** 2
    torch.testing.assert_close(scorer.squared_errors(windows, "reconstruction"), expected, rtol=1e-4, atol=1e-6)


def test_the_flag_prior_predicts_a_flags_noise_as_its_posterior_mean_and_leaves_other_channels_to_the_stack() -> None:
    rng = np.random.default_rng(0)
    windows = np.stack([0.2 * rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))], axis=2).astype(np.float32)
    schedule = NoiseSchedule(100)
    prior = FlagPrior(2, schedule.alpha_bars)
    prior.fit(windows[:2000], np.array([True, False]))
    x0 = torch.from_numpy(windows[2000:])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for step in (5, 40, 90):
        t = torch.full((len(x0),), step)
        predicted = prior(schedule.q_sample(x0, t, noise), t)
        assert torch.all(predicted[:, :, 1] == 0)
        error = ((predicted[:, :, 0] - noise[:, :, 0]) ** 2).mean()
        for factor in (0.0, 0.8, 1.25):
            assert error < ((factor * predicted[:, :, 0] - noise[:, :, 0]) ** 2).mean(), (step, factor)
