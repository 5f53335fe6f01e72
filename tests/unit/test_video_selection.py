import numpy as np
import torch

from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, to_unit
from triton_models.video.frames import causal_windows
from triton_models.video.selection import (
    BASELINE_NAME,
    CANDIDATES,
    Candidate,
    best_candidate,
    event_mix,
    select_scoring,
    selection_spread,
    synthetic_set,
)
from triton_models.video.synthetic import moving_object, moving_patch_location, reverse_play, speed_up

TINY = VideoModelConfig(height=16, width=24, context=2, base_channels=8, ddim_steps=2, patch=4, patch_stride=2)


def walking_clip(frames: int = 40, seed: int = 0, height: int = 16, width: int = 24) -> np.ndarray:
    """A bright 4x3 block stepping one pixel every second frame over a noisy background."""
    rng = np.random.default_rng(seed)
    clip = rng.integers(90, 100, (frames, height, width)).astype(np.uint8)
    for index in range(frames):
        left = 2 + index // 2 % (width - 6)
        clip[index, 8:12, left : left + 3] = 200
    return clip


def test_moving_patch_location_finds_the_moving_object_not_the_background() -> None:
    clip = walking_clip()
    _, top, left = moving_patch_location(clip, (4, 3))
    assert 5 <= top <= 11
    assert 0 <= left <= 22


def test_moving_object_changes_only_labelled_frames_and_moves_at_its_speed() -> None:
    clip = np.full((60, 16, 24), 100, dtype=np.uint8)
    out, labels, event = moving_object(clip, walking_clip(), np.random.default_rng(1), speed=3.0, size=(4, 3), start=10)
    assert event.start == 10 and labels.sum() == event.length == int(np.ceil((24 - 3) / 3)) + 1
    changed = (out != clip).reshape(len(clip), -1).any(1)
    assert np.array_equal(changed, labels == 1)
    columns = [np.flatnonzero((out[i] != clip[i]).any(0)).mean() for i in range(10, 10 + event.length - 1)]
    assert np.allclose(np.abs(np.diff(columns)), 3.0, atol=1.0)


def test_speed_up_skips_frames_inside_the_event_only() -> None:
    clip = np.arange(100, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), dtype=np.uint8)
    out, labels, event = speed_up(clip, np.random.default_rng(0), stride=3, length=10, start=20)
    frames = out[:, 0, 0].astype(int)
    assert len(out) == 100 - 10 * 2
    assert np.array_equal(np.flatnonzero(np.diff(frames) == 3) + 1, np.flatnonzero(labels))
    assert np.all(np.diff(frames)[labels[1:] == 0] == 1)
    assert event.kind == "speed_up" and labels.sum() == 10


def test_moving_object_across_the_walkway_moves_down_the_rows_and_can_start_in_view() -> None:
    clip = np.full((60, 24, 16), 100, dtype=np.uint8)
    out, labels, event = moving_object(
        clip, walking_clip(), np.random.default_rng(3), speed=2.0, size=(4, 3), start=0, vertical=True, entered=0.5
    )
    changed_rows = [np.flatnonzero((out[i] != clip[i]).any(1)) for i in range(event.length)]
    assert labels[0] == 1 and event.start == 0  # in view at the clip's first frame ...
    assert 6 <= changed_rows[0].min() <= 14  # ... halfway across, not entering at an edge
    assert np.allclose(np.abs(np.diff([rows.mean() for rows in changed_rows[:-1]])), 2.0, atol=1.0)
    assert event.length == int(np.ceil((24 - 4) * 0.5 / 2.0)) + 1


def test_reverse_play_reverses_the_labelled_stretch_only() -> None:
    clip = np.arange(80, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), dtype=np.uint8)
    out, labels, event = reverse_play(clip, np.random.default_rng(0), length=10, start=20)
    frames = out[:, 0, 0].astype(int)
    assert list(frames[20:30]) == list(range(29, 19, -1))
    assert np.array_equal(frames[labels == 0], np.r_[np.arange(20), np.arange(30, 80)])
    assert event.kind == "reverse_play" and labels.sum() == 10


def test_synthetic_set_holds_every_kind_capped_frames_and_all_normal_frames() -> None:
    held = [walking_clip(50, seed) for seed in (1, 2)]
    synthetic = synthetic_set(held, [walking_clip(50, 3)], context=2, seed=0, frames_per_event=5)
    assert synthetic.normal.shape == (100, 3, 16, 24)
    assert len(synthetic.events) == 2 * len(event_mix(16, 24))
    kinds = {event.kind for event in synthetic.events}
    assert {"fast_object", "dim_object", "small_object", "slow_object", "across_walkway", "from_first_frame"} <= kinds
    assert {"speed_up", "reverse_play"} <= kinds
    assert len(synthetic.anomalous) == len(synthetic.kinds) <= 5 * len(synthetic.events)
    assert all(np.sum(synthetic.kinds == kind) <= 5 * 2 * 2 for kind in kinds)  # two fast objects per clip
    assert synthetic.labels().sum() == len(synthetic.anomalous)
    first = next(event for event in synthetic.events if event.kind == "from_first_frame")
    assert first.start == 0


def test_best_candidate_needs_a_clear_margin_to_leave_the_earlier_one() -> None:
    assert best_candidate([0.90, 0.9005, 0.85]) == 0
    assert best_candidate([0.90, 0.95, 0.951]) == 1
    assert best_candidate([0.80, 0.90, 0.95]) == 2


def test_select_scoring_records_every_candidate_and_applies_the_winner() -> None:
    torch.manual_seed(0)
    model = FrameDiffusion(TINY).eval()
    synthetic = synthetic_set([walking_clip(40, 1)], [walking_clip(40, 2)], TINY.context, frames_per_event=4)
    chosen, config, table = select_scoring(model, synthetic)
    assert [row["name"] for row in table] == [c.name for c in CANDIDATES] + [BASELINE_NAME]
    assert set(table[0]["synthetic_auroc_by_kind"]) == set(synthetic.kinds.tolist())
    assert sum(bool(row["chosen"]) for row in table) == 1
    winner = next(row for row in table if row["chosen"])
    assert winner["name"] == chosen.name and config.scoring == chosen.scoring
    assert model.config == TINY  # the candidates were tried on the model and it was put back
    assert all(0.0 <= float(row["synthetic_auroc"]) <= 1.0 for row in table)
    spread = selection_spread(table)
    values = [float(row["synthetic_auroc"]) for row in table[:-1]]
    assert spread["all"] == max(values) - min(values)
    assert set(spread) == {"all", *synthetic.kinds.tolist()}


def test_scoring_modes_differ_in_what_reaches_the_network() -> None:
    torch.manual_seed(0)
    model = FrameDiffusion(TINY).eval()
    windows = torch.from_numpy(causal_windows(walking_clip(8, 0), TINY.context))
    changed = windows.clone()
    changed[:, -1] = 255 - changed[:, -1]
    model.config = Candidate("r", scoring="reconstruct", noise_level=0.3).config(TINY, np.ones(1))
    assert not torch.equal(model.prediction(to_unit(windows)), model.prediction(to_unit(changed)))
    model.config = TINY
    assert torch.equal(model.prediction(to_unit(windows)), model.prediction(to_unit(changed)))
    model.config = Candidate("ratio", copy_ratio_quantile=0.5).config(TINY, np.array([0.01, 0.02]))
    assert model.config.copy_ratio_floor == np.quantile([0.01, 0.02], 0.5)
    ratio_scores, _ = model.score(windows)
    model.config = TINY
    assert not torch.allclose(ratio_scores, model.score(windows)[0])
