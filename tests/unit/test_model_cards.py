"""The model card: both families' writers produce the one schema that the pipeline's reader takes, and nothing else."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from operators.model_cards import ModelCardError, card_path, load_ts_card, load_video_card
from triton_models.model_card import SCHEMA_VERSION, ServedThreshold, TensorSpec, Training, TritonIo, TsCard
from triton_models.names import IMPUTATION, POOLED_STREAM, RECONSTRUCTION, SCORE, WINDOW
from triton_models.timeseries.detector import ModelConfig
from triton_models.timeseries.repository import write_model_repository
from triton_models.timeseries.scoring import ScoringConfig
from triton_models.timeseries.training import fit_detector
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion
from triton_models.video.repository import MODEL_NAME as VIDEO_MODEL
from triton_models.video.repository import export_model

TRAINING = Training(settings={"epochs": 1}, seconds=1.5, final_loss=0.25, data={"source": "test"})


def ts_card_data(**changes: object) -> dict:
    """A valid time-series card as JSON data, with top-level ``changes``."""
    threshold = ServedThreshold(value=1.0, method="per_stream", rule="test")
    modes = {
        mode: {"threshold": threshold, "channel_error_scale": [1.0, 1.0], "held_out_score_quantiles": {}}
        for mode in (IMPUTATION, RECONSTRUCTION)
    }
    card = TsCard(
        model="ts_diffusion",
        description="test",
        io=TritonIo(inputs={WINDOW: TensorSpec(dtype="FP32", dims=[-1, 8, 2])}, outputs={}, score_semantics="test"),
        training=TRAINING,
        config={},
        window=8,
        stride=4,
        channels=["a", "b"],
        slow_channels=[],
        default_mode=RECONSTRUCTION,
        modes=modes,
        streams=["pump-a"],
    )
    return {**json.loads(card.model_dump_json()), **changes}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "model_card.json"
    path.write_text(json.dumps(data))
    return path


def test_the_ts_writer_and_the_reader_share_one_card(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tables = {name: rng.normal(size=(120, 2)).astype(np.float32) for name in ("pump-a", "pump-b")}
    scoring = ScoringConfig(imputation_steps=2, reconstruction_steps=2, reconstruction_samples=1)
    config = ModelConfig(["x", "y"], window=8, hidden=8, dilations=(1,), diffusion_steps=10, scoring=scoring)
    detector, report = fit_detector(tables, config, epochs=1, progress=False)
    write_model_repository(detector, report, tmp_path, "pumps", seconds=2.0, sample_period_s=0.5)

    card = load_ts_card(card_path(tmp_path, "ts_diffusion"))
    assert (card.window, card.stride, card.channels, card.sample_period_s) == (8, 1, ("x", "y"), 0.5)
    assert card.thresholds == {IMPUTATION: 1.0, RECONSTRUCTION: 1.0}  # served scores are calibrated per stream
    assert card.default_mode == RECONSTRUCTION and card.threshold(IMPUTATION) == 1.0
    assert card.streams == ("pump-a", "pump-b")  # the pooled fallback is no asset
    written = TsCard.from_json(card_path(tmp_path, "ts_diffusion").read_text())
    assert written.schema_version == SCHEMA_VERSION and written.training.data["source"] == "pumps"
    assert written.io.outputs[SCORE].dims == [-1, 1]


def test_the_video_writer_and_the_reader_share_one_card(tmp_path: Path) -> None:
    config = VideoModelConfig(height=16, width=24, context=2, base_channels=8, ddim_steps=2, patch=4, patch_stride=2)
    torch.manual_seed(0)
    threshold = ServedThreshold(value=0.02, method="quantile", rule="test")
    export_model(FrameDiffusion(config), tmp_path, threshold, TRAINING, {"candidates": []}, [1.0, 0.5], instances=1)

    card = load_video_card(card_path(tmp_path, VIDEO_MODEL))
    assert (card.context, card.height, card.width, card.threshold, card.version) == (2, 16, 24, 0.02, "")


def test_a_card_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match=r"unknown schema_version 2; this reader knows schema 1: retrain"):
        load_ts_card(write(tmp_path, ts_card_data(schema_version=2)))
    old_layout = {"window": 8, "stride": 4, "channels": ["a"], "thresholds": {"imputation": 1.5}}
    with pytest.raises(ModelCardError, match="no schema_version"):
        load_ts_card(write(tmp_path, old_layout))
    with pytest.raises(ModelCardError, match="no schema_version"):
        load_video_card(write(tmp_path, {"context": 4, "height": 64, "width": 96, "threshold": 0.2}))


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"window": 0}, "window: Input should be greater than 0"),
        ({"window": "8"}, "window: Input should be a valid integer"),
        ({"stride": 16}, "stride 16 exceeds window 8"),
        ({"channels": []}, "channels: List should have at least 1 item"),
        ({"channels": ["a", "a"]}, "duplicates"),
        ({"slow_channels": ["c"]}, "slow_channels must be channels"),
        ({"default_mode": "forecast"}, "default_mode: Input should be 'imputation' or 'reconstruction'"),
        ({"streams": [POOLED_STREAM]}, "pooled fallback"),
        ({"thresholds": {"imputation": 1.5}}, "thresholds: Extra inputs are not permitted"),
    ],
)
def test_bad_ts_cards_say_why(tmp_path: Path, changes: dict, reason: str) -> None:
    with pytest.raises(ModelCardError, match=reason):
        load_ts_card(write(tmp_path, ts_card_data(**changes)))


def test_a_threshold_must_be_a_finite_number(tmp_path: Path) -> None:
    data = ts_card_data()
    data["modes"][IMPUTATION]["threshold"]["value"] = float("inf")
    with pytest.raises(ModelCardError, match=r"modes\.imputation\.threshold\.value: Input should be a finite number"):
        load_ts_card(write(tmp_path, data))
    del data["modes"][IMPUTATION], data["modes"][RECONSTRUCTION]
    with pytest.raises(ModelCardError, match="modes: Dictionary should have at least 1 item"):
        load_ts_card(write(tmp_path, data))


def test_missing_or_broken_card(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="no model card"):
        load_ts_card(tmp_path / "absent.json")
    path = tmp_path / "model_card.json"
    path.write_text("{")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_video_card(path)
    with pytest.raises(ModelCardError, match="a model card is a JSON object"):
        load_video_card(write(tmp_path, [1]))


def test_a_ts_card_is_no_video_card(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="context: Field required"):
        load_video_card(write(tmp_path, ts_card_data()))


def test_the_stand_in_cards_of_the_integration_tests_follow_the_schema() -> None:
    stand_ins = Path(__file__).resolve().parents[1] / "integration" / "models"
    assert load_ts_card(card_path(stand_ins, "ts_diffusion")).window == 16
    assert load_video_card(card_path(stand_ins, VIDEO_MODEL)).context == 2
