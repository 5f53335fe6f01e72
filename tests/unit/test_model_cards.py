import json
from pathlib import Path

import pytest

from operators.model_cards import ModelCardError, load_ts_card, load_video_card


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(data))
    return path


def test_ts_card_is_read_with_defaults(tmp_path: Path) -> None:
    card = load_ts_card(
        write(tmp_path, {"window": 8, "stride": 4, "channels": ["a", "b"], "thresholds": {"imputation": 1.5}})
    )
    assert card.window == 8 and card.stride == 4 and card.channels == ("a", "b")
    assert card.default_mode == "imputation" and card.threshold("imputation") == 1.5
    assert card.sample_period_s == 1.0 and card.streams == ()
    with pytest.raises(ModelCardError, match="no threshold for mode 'reconstruction'"):
        card.threshold("reconstruction")


def test_single_threshold_applies_to_every_mode(tmp_path: Path) -> None:
    card = load_ts_card(write(tmp_path, {"window": 8, "stride": 8, "channels": ["a"], "threshold": 2}))
    assert card.thresholds == {"imputation": 2.0, "reconstruction": 2.0}
    assert card.default_mode == "reconstruction"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"stride": 1, "channels": ["a"], "threshold": 1}, "'window' must be a positive integer"),
        ({"window": 4, "stride": 8, "channels": ["a"], "threshold": 1}, "exceeds window"),
        ({"window": 4, "stride": 2, "channels": [], "threshold": 1}, "channels"),
        ({"window": 4, "stride": 2, "channels": ["a", "a"], "threshold": 1}, "duplicates"),
        ({"window": 4, "stride": 2, "channels": ["a"]}, "thresholds"),
        ({"window": 4, "stride": 2, "channels": ["a"], "thresholds": {"magic": 1}}, "unknown mode"),
        ({"window": 4, "stride": 2, "channels": ["a"], "thresholds": {"imputation": "x"}}, "finite number"),
    ],
)
def test_bad_ts_cards_say_why(tmp_path: Path, data: dict, reason: str) -> None:
    with pytest.raises(ModelCardError, match=reason):
        load_ts_card(write(tmp_path, data))


def test_missing_or_broken_card(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="no model card"):
        load_ts_card(tmp_path / "absent.json")
    path = tmp_path / "model_card.json"
    path.write_text("{")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_video_card(path)


def test_video_card(tmp_path: Path) -> None:
    card = load_video_card(write(tmp_path, {"context": 4, "height": 64, "width": 96, "threshold": 0.2}))
    assert (card.context, card.height, card.width, card.threshold) == (4, 64, 96, 0.2)


def test_ts_card_with_per_mode_calibration_records(tmp_path: Path) -> None:
    card = load_ts_card(
        write(
            tmp_path,
            {
                "window": 32,
                "stride": 8,
                "channels": ["a", "b"],
                "default_mode": "imputation",
                "modes": {
                    "imputation": {"threshold": {"value": 1.25, "method": "pot"}, "channel_error_scale": [1, 1]},
                    "reconstruction": {"threshold": 2.5},
                },
                "streams": ["default", "valve1_0"],
            },
        )
    )
    assert card.thresholds == {"imputation": 1.25, "reconstruction": 2.5}
    assert card.default_mode == "imputation" and card.streams == ("valve1_0",)


def test_video_card_with_context_frames_and_resolution(tmp_path: Path) -> None:
    card = load_video_card(
        write(
            tmp_path,
            {"context_frames": 3, "resolution": {"width": 96, "height": 64}, "threshold": {"value": 0.4}},
        )
    )
    assert (card.context, card.height, card.width, card.threshold) == (3, 64, 96, 0.4)
