"""One spelling of the Triton tensor names and scoring modes, in every config.pbtxt that declares them."""

import re
from pathlib import Path

from triton_models import names
from triton_models.timeseries.detector import ModelConfig
from triton_models.timeseries.repository import config_pbtxt as ts_config_pbtxt
from triton_models.video.config import VideoModelConfig
from triton_models.video.repository import config_pbtxt as video_config_pbtxt

STAND_INS = Path(__file__).resolve().parents[1] / "integration" / "models"


def declared(pbtxt: str, section: str) -> list[str]:
    """Tensor names in the ``input [ ... ]`` or ``output [ ... ]`` list of a config.pbtxt."""
    start = re.search(rf"^{section} \[", pbtxt, re.M)
    assert start, section
    depth, end = 0, start.end() - 1
    for end in range(start.end() - 1, len(pbtxt)):
        depth += {"[": 1, "]": -1}.get(pbtxt[end], 0)
        if depth == 0:
            break
    return re.findall(r'name: "(\w+)"', pbtxt[start.end() : end])


def test_ts_configs_declare_the_shared_names() -> None:
    for pbtxt in (ts_config_pbtxt(ModelConfig(["a", "b"])), (STAND_INS / "ts_diffusion" / "config.pbtxt").read_text()):
        assert declared(pbtxt, "input") == [names.WINDOW, names.STREAM, names.MODE]
        assert declared(pbtxt, "output") == list(names.TS_OUTPUTS)


def test_video_configs_declare_the_shared_names() -> None:
    pbtxt = video_config_pbtxt(VideoModelConfig())
    for text in (pbtxt, (STAND_INS / "video_diffusion" / "config.pbtxt").read_text()):
        assert declared(text, "input") == [names.FRAMES]
        assert declared(text, "output") == list(names.VIDEO_OUTPUTS)


def test_mode_names() -> None:
    assert names.TS_MODES == (names.IMPUTATION, names.RECONSTRUCTION) == ("imputation", "reconstruction")
    assert names.VIDEO_SCORINGS == (names.FORECAST, names.RECONSTRUCT) == ("forecast", "reconstruct")


def test_instance_count_is_the_instance_group_of_both_models() -> None:
    for pbtxt in (
        ts_config_pbtxt(ModelConfig(["a", "b"]), instances=3),
        video_config_pbtxt(VideoModelConfig(), instances=3),
    ):
        assert re.search(r"^instance_group \[ \{ count: 3 kind: KIND_CPU \} \]$", pbtxt, re.M), pbtxt
