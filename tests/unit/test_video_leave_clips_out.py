import numpy as np
import pytest

from triton_models.video.leave_clips_out import (
    ScoredClips,
    alert_for_frames,
    anomalous_throughout,
    choice_on_other_clips,
    enters_mid_clip,
    leave_clips_out,
    persistent_alarms,
    youden_threshold,
)

# Clip "a" starts normal and turns anomalous at frame 4; clip "b" is anomalous from its first frame; "c" is normal
# but for its last two frames.
LABELS = {
    "a": np.array([0, 0, 0, 0, 1, 1, 1, 1]),
    "b": np.array([1, 1, 1, 1, 1, 0]),
    "c": np.array([0, 0, 0, 0, 1, 1]),
}


def test_youden_threshold_alarms_exactly_on_the_separable_frames() -> None:
    labels = np.array([0, 0, 1, 1, 0])
    scores = np.array([0.1, 0.3, 0.8, 0.6, 0.2])
    threshold = youden_threshold(labels, scores)
    assert 0.3 < threshold < 0.6
    assert np.array_equal(scores > threshold, labels == 1)


def test_anomalous_throughout_takes_clips_anomalous_from_the_first_frame_against_other_clips_normals() -> None:
    # b's anomalous frames score like a's normal ones; b's own normal frame scores low (a per-clip view would
    # separate b perfectly, the pooled view must not).
    scores = {
        "m": {
            "a": np.array([0.5, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9, 0.9]),
            "b": np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.1]),
            "c": np.array([0.2, 0.2, 0.2, 0.2, 0.9, 0.9]),
        }
    }
    result = anomalous_throughout(ScoredClips(LABELS, scores, {"m": 0.7}), "m")
    assert result["clips"] == ["b"] and result["negatives_from"] == ["a", "c"]
    # b's 0.5 against a's four 0.5 (ties) and c's four 0.2: (4 * 0.5 + 4) / 8
    assert result["pooled_auroc"] == pytest.approx(0.75)
    assert result["per_clip_auroc"]["b"] == pytest.approx(0.75)


def test_enters_mid_clip_reports_delay_early_alarms_and_entry_window() -> None:
    scores = {
        "m": {
            "a": np.array([0.1, 0.8, 0.1, 0.1, 0.2, 0.3, 0.9, 0.9]),
            "b": np.zeros(6),
            "c": np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
        }
    }
    result = enters_mid_clip(ScoredClips(LABELS, scores, {"m": 0.5}), "m", window=2)
    a, c = result["per_clip"]["a"], result["per_clip"]["c"]
    assert set(result["per_clip"]) == {"a", "c"}  # b is anomalous from its first frame
    assert a["entry_frame"] == 4 and a["delay_frames"] == 2 and a["alarms_before_entry"] == 1
    assert a["window_auroc"] == 1.0  # frames 2..5: 0.1, 0.1 normal; 0.2, 0.3 anomalous
    assert c["delay_frames"] is None and c["window_auroc"] == 0.5


def test_choice_on_other_clips_never_sees_the_held_out_clip() -> None:
    # "x" ranks a and b perfectly but c backwards; "y" ranks only c well. Holding c out, x wins on a and b; holding
    # a or b out, the other clips (one of a/b and c) decide.
    good = {c: LABELS[c].astype(float) for c in LABELS}
    bad_c = {**good, "c": 1.0 - LABELS["c"]}
    only_c = {"a": 1.0 - LABELS["a"], "b": 1.0 - LABELS["b"], "c": LABELS["c"].astype(float) * 5}
    data = ScoredClips(LABELS, {"x": bad_c, "y": only_c}, {"x": 0.5, "y": 0.5})
    result = choice_on_other_clips(data, ["x", "y"])
    chosen = {fold["held_out"]: fold["chosen"] for fold in result["folds"]}
    assert chosen["c"] == "x"
    assert result["per_clip_auroc"]["c"] == 0.0  # x fails on the clip it did not see
    full = leave_clips_out(data, ["x"], "x", "y")
    assert full["summary"]["margin_over_baseline"] == pytest.approx(
        full["scorers"]["x"]["pooled_auroc"] - full["scorers"]["y"]["pooled_auroc"]
    )
    assert full["frames"] == 20 and full["anomalous_frames"] == 11


def test_persistent_alarms_need_consecutive_frames_above_the_threshold() -> None:
    scores = np.array([0.9, 0.1, 0.9, 0.9, 0.9, 0.1, 0.9])
    assert persistent_alarms(scores, 0.5, 1).tolist() == (scores > 0.5).tolist()
    assert persistent_alarms(scores, 0.5, 3).tolist() == [False, False, False, False, True, False, False]


def test_alert_for_frames_trades_false_alarms_for_delay() -> None:
    scores = {
        "m": {
            "a": np.array([0.1, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9]),
            "b": np.full(6, 0.9),
            "c": np.full(6, 0.1),
        }
    }
    result = alert_for_frames(ScoredClips(LABELS, scores, {"m": 0.5}), "m")
    assert result["1"]["entry_delay_frames"] == {"a": 0, "c": None}
    assert result["3"]["entry_delay_frames"]["a"] == 2
    assert result["3"]["false_positive_rate"] < result["1"]["false_positive_rate"]
    assert result["3"]["recall"] < result["1"]["recall"]
