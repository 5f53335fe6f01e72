import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from triton_models import diffusion
from triton_models.model_card import ServedThreshold, Training
from triton_models.names import FRAMES, MAP, OPTICAL_FLOW, RECONSTRUCT, SCORE
from triton_models.video import diffusion as video_diffusion
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import (
    FrameDiffusion,
    frame_difference_scores,
    motion_aware_map,
    score_batches,
    score_configs,
    to_unit,
)
from triton_models.video.evaluation import auprc, auroc, detection_metrics, eer
from triton_models.video.frames import causal_windows
from triton_models.video.motion import flow_map, flow_scores
from triton_models.video.repository import config_pbtxt, export_model, load_card, load_model
from triton_models.video.train import TrainSettings, calibrate_threshold, train_model

TINY = VideoModelConfig(height=16, width=24, context=2, base_channels=8, ddim_steps=2, patch=4, patch_stride=2)


def moving_square_clip(frames: int, config: VideoModelConfig, speed: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clip = np.full((frames, config.height, config.width), 60, dtype=np.uint8)
    for index in range(frames):
        left = (2 + speed * index) % (config.width - 4)
        clip[index, 6:10, left : left + 4] = 200
    return (clip + rng.integers(0, 3, clip.shape)).astype(np.uint8)


def test_causal_windows_pad_with_the_first_frame_and_never_look_ahead() -> None:
    clip = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 3), dtype=np.uint8)
    windows = causal_windows(clip, context=3)
    assert windows.shape == (5, 4, 2, 3)
    assert windows[0, :, 0, 0].tolist() == [0, 0, 0, 0]
    assert windows[2, :, 0, 0].tolist() == [0, 0, 1, 2]
    assert windows[4, :, 0, 0].tolist() == [1, 2, 3, 4]
    assert all(windows[i, -1, 0, 0] == i and windows[i].max() <= i for i in range(5))


def test_a_frames_score_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    model = FrameDiffusion(TINY).eval()
    windows = causal_windows(moving_square_clip(12, TINY), TINY.context)
    alone, alone_map = model.score(torch.from_numpy(windows[5:6]))
    batched, batched_map = model.score(torch.from_numpy(windows))
    reordered, _ = model.score(torch.from_numpy(windows[::-1].copy()))
    assert torch.allclose(alone[0], batched[5], atol=1e-6)
    assert torch.allclose(alone_map[0], batched_map[5], atol=1e-6)
    assert torch.allclose(reordered.flip(0), batched, atol=1e-6)
    assert batched_map.shape == (12, *TINY.map_shape)


def test_scoring_never_sees_the_current_frame_through_the_network() -> None:
    """Identity-shortcut guard: the prediction depends on the past frames only."""
    torch.manual_seed(0)
    model = FrameDiffusion(TINY).eval()
    windows = torch.from_numpy(causal_windows(moving_square_clip(6, TINY), TINY.context))
    changed = windows.clone()
    changed[:, -1] = 255 - changed[:, -1]
    past = windows[:, :-1].float() / 127.5 - 1
    assert torch.equal(model.predict(past), model.predict(changed[:, :-1].float() / 127.5 - 1))
    assert (model.score(changed)[0] > model.score(windows)[0]).all()


def test_tiny_training_learns_motion_and_flags_a_fast_object(tmp_path: Path) -> None:
    normal = np.concatenate([causal_windows(moving_square_clip(40, TINY, seed=s), TINY.context) for s in range(3)])
    result = train_model(normal, TINY, TrainSettings(steps=150, batch_size=16, threads=1), progress=False)
    assert np.mean(result.losses[-20:]) < np.mean(result.losses[:20]) / 2
    fast = causal_windows(moving_square_clip(40, TINY, speed=5, seed=9), TINY.context)[TINY.context :]
    slow = causal_windows(moving_square_clip(40, TINY, seed=9), TINY.context)[TINY.context :]
    fast_scores, _ = score_batches(result.model, fast)
    slow_scores, _ = score_batches(result.model, slow)
    assert np.median(fast_scores) > 2 * np.median(slow_scores)

    threshold = ServedThreshold(value=calibrate_threshold(result.model, slow, 0.99), method="quantile", rule="q0.99")
    training = Training(settings={}, seconds=result.seconds, final_loss=result.losses[-1], data={"clips": 3})
    model_dir = export_model(
        result.model, tmp_path, threshold, training, {"candidates": []}, result.losses, instances=1
    )
    loaded = load_model(model_dir / "1")
    np.testing.assert_allclose(score_batches(loaded, fast)[0], fast_scores, rtol=1e-6)
    card = load_card(model_dir)
    assert (card.context, card.height, card.width, card.map_shape) == (2, 16, 24, TINY.map_shape)
    assert card.threshold == threshold and card.training.data == {"clips": 3} and card.config == asdict(TINY)
    assert set(card.io.inputs) == {FRAMES} and set(card.io.outputs) == {SCORE, MAP}
    assert (model_dir / "loss.png").stat().st_size > 0
    assert "dims: [ 3, 16, 24 ]" in (model_dir / "config.pbtxt").read_text()


def test_schedule_loss_and_sampler_are_the_shared_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """The video model keeps no diffusion math of its own: what it calls is triton_models.diffusion."""
    calls = []
    for name in ("ddpm_loss", "ddim_sample"):
        shared = getattr(diffusion, name)
        monkeypatch.setattr(video_diffusion, name, lambda *a, _f=shared, _n=name, **k: calls.append(_n) or _f(*a, **k))
    model = FrameDiffusion(TINY)
    assert type(model.schedule) is diffusion.NoiseSchedule
    clips = to_unit(torch.from_numpy(causal_windows(moving_square_clip(4, TINY), TINY.context)))
    model.loss(clips)
    model.prediction(clips)
    assert calls == ["ddpm_loss", "ddim_sample"]


def _reference_alpha_bar(timesteps: int) -> torch.Tensor:
    """The clipped cosine the video model was trained with, written out."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
    return (f / f[0])[1:].clamp(min=1e-5, max=0.9999).float()


@torch.no_grad()
def _reference_predict(model: FrameDiffusion, past: torch.Tensor, current: torch.Tensor | None) -> torch.Tensor:
    """Few-step DDIM with x0-prediction clamped to [-1, 1] and trailing timesteps, written out."""
    config, alpha_bar = model.config, _reference_alpha_bar(model.config.timesteps)
    top = config.timesteps if current is None else round(config.noise_level * config.timesteps)
    timesteps = [max(0, round(top * (config.ddim_steps - i) / config.ddim_steps) - 1) for i in range(config.ddim_steps)]
    x = model.start_noise.expand(past.shape[0], -1, -1, -1)
    if current is not None:
        a = alpha_bar[timesteps[0]]
        x = a.sqrt() * current + (1 - a).sqrt() * x
    for index, t in enumerate(timesteps):
        a = alpha_bar[t]
        x0 = model.net(past, x, torch.full((past.shape[0],), t)).clamp(-1, 1)
        if index + 1 < len(timesteps):
            eps, a_next = (x - a.sqrt() * x0) / (1 - a).sqrt(), alpha_bar[timesteps[index + 1]]
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x0


@pytest.mark.parametrize("scoring", ["forecast", RECONSTRUCT])
def test_shared_schedule_and_sampler_give_the_video_models_numbers_bit_for_bit(scoring: str) -> None:
    config = replace(TINY, timesteps=1000, ddim_steps=4, scoring=scoring, noise_level=0.3)
    torch.manual_seed(0)
    model = FrameDiffusion(config).eval()
    assert torch.equal(model.schedule.alpha_bars, _reference_alpha_bar(1000))
    clips = to_unit(torch.from_numpy(causal_windows(moving_square_clip(6, config), config.context)))
    current = clips[:, -1:] if scoring == RECONSTRUCT else None
    assert torch.equal(model.prediction(clips), _reference_predict(model, clips[:, :-1], current))


def test_config_pbtxt_declares_the_stream_contract() -> None:
    text = config_pbtxt(VideoModelConfig())
    assert f'name: "{FRAMES}" data_type: TYPE_UINT8 dims: [ 5, 96, 144 ]' in text
    assert f'name: "{SCORE}" data_type: TYPE_FP32 dims: [ 1 ] reshape: {{ shape: [ ] }}' in text
    assert f'name: "{MAP}" data_type: TYPE_FP32 dims: [ 15, 23 ]' in text
    assert "dynamic_batching" in text and "KIND_CPU" in text


def test_frame_difference_baseline_is_zero_for_a_still_scene() -> None:
    still = np.full((3, TINY.context + 1, TINY.height, TINY.width), 90, dtype=np.uint8)
    scores, _ = frame_difference_scores(torch.from_numpy(still), TINY)
    assert scores.abs().max() == 0


def test_metrics_on_known_cases() -> None:
    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert auroc(labels, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert auroc(labels, np.array([0.1, 0.3, 0.2, 0.4])) == 0.75
    assert auroc(labels, np.ones(4)) == 0.5
    assert auprc(labels, np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx((1 + 2 / 3) / 2)
    assert eer(labels, np.array([0.1, 0.2, 0.3, 0.4])) == 0.0
    metrics = detection_metrics(
        {"a": np.array([0, 1]), "b": np.array([0, 0])}, {"a": np.array([0.1, 0.9]), "b": np.array([0.2, 0.95])}, 0.5
    )
    assert metrics["auroc_per_clip"]["a"] == 1.0 and np.isnan(metrics["auroc_per_clip"]["b"])
    assert metrics["auroc_macro"] == 1.0 and metrics["auroc_micro"] == pytest.approx(2 / 3)
    assert metrics["at_threshold"]["false_positive_rate"] == pytest.approx(1 / 3)


def test_scoring_all_candidates_at_once_equals_scoring_each_as_served() -> None:
    torch.manual_seed(0)
    model = FrameDiffusion(TINY).eval()
    windows = causal_windows(moving_square_clip(20, TINY, speed=2), TINY.context)
    configs = [
        TINY,
        replace(TINY, scoring=RECONSTRUCT, noise_level=0.3),
        replace(TINY, copy_ratio_floor=0.01),
        replace(TINY, motion_weight=0.5),
        replace(TINY, motion_weight=0.5, motion=OPTICAL_FLOW),
    ]
    together = score_configs(model, windows, configs, batch_size=7)
    for config, scores in zip(configs, together, strict=True):
        model.config = config
        assert np.allclose(scores, score_batches(model, windows)[0], rtol=1e-5, atol=0)
    assert model.config == configs[-1] and not np.allclose(together[0], together[3])
    assert not np.allclose(together[3], together[4])


def test_motion_weight_blends_the_error_with_the_motion_map() -> None:
    error = torch.tensor([[[0.04, 0.04, 0.0]]])
    motion = torch.tensor([[[0.01, 0.0, 0.09]]])
    blended = motion_aware_map(error, motion, motion, replace(TINY, motion_weight=0.5))
    assert torch.allclose(blended, torch.tensor([[[0.02, 0.0, 0.0]]]))  # high only where surprised AND moving
    assert torch.equal(motion_aware_map(error, motion, motion, TINY), error)


def test_optical_flow_is_zero_when_still_and_grows_with_speed_where_the_object_moves() -> None:
    config = VideoModelConfig(height=48, width=72, context=2, patch=12, patch_stride=6)
    still = np.full((3, 48, 72), 90, dtype=np.uint8)
    assert float(flow_scores(torch.from_numpy(still[None]), config)[0]) == pytest.approx(0.0, abs=1e-3)

    def square_moving(speed: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        clip = (rng.integers(0, 30, (3, 48, 72)) + 60).astype(np.uint8)
        clip[:] = clip[0]  # a textured, still background
        for index in range(3):
            clip[index, 18:30, 10 + speed * index : 22 + speed * index] = 220
        return clip

    slow, fast = (flow_map(torch.from_numpy(square_moving(s)[None]), config)[0] for s in (1, 4))
    assert float(fast.max()) > 2 * float(slow.max()) > 0
    top = int(np.unravel_index(int(fast.argmax()), fast.shape)[0]) * config.patch_stride
    assert top < 30 and top + config.patch > 18  # the fastest patch overlaps the square's rows
