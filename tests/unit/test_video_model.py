import json
from pathlib import Path

import numpy as np
import pytest
import torch

from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, frame_difference_scores, score_batches
from triton_models.video.evaluation import auprc, auroc, detection_metrics, eer
from triton_models.video.frames import causal_windows
from triton_models.video.repository import config_pbtxt, export_model, load_model, load_threshold
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

    threshold = calibrate_threshold(result.model, slow, 0.99)
    model_dir = export_model(result.model, tmp_path, threshold, {"data": {"clips": 3}}, result.losses, instances=1)
    loaded = load_model(model_dir / "1")
    assert load_threshold(model_dir / "1") == threshold
    np.testing.assert_allclose(score_batches(loaded, fast)[0], fast_scores, rtol=1e-6)
    card = json.loads((model_dir / "model_card.json").read_text())
    assert card["context_frames"] == 2 and card["threshold"] == threshold and card["data"] == {"clips": 3}
    assert (model_dir / "loss.png").stat().st_size > 0
    assert "dims: [ 3, 16, 24 ]" in (model_dir / "config.pbtxt").read_text()


def test_config_pbtxt_declares_the_stream_contract() -> None:
    text = config_pbtxt(VideoModelConfig())
    assert 'name: "FRAMES" data_type: TYPE_UINT8 dims: [ 5, 96, 144 ]' in text
    assert 'name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] }' in text
    assert 'name: "MAP" data_type: TYPE_FP32 dims: [ 15, 23 ]' in text
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
