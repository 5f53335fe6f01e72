"""Writes ``<model-repo>/ts_diffusion/``: config.pbtxt, ``1/model.py`` adapter, weights, normalisation,
calibration (``1/``), and ``model_card.json`` (:class:`triton_models.model_card.TsCard`) next to config.pbtxt."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from triton_models.model_card import TensorSpec, Training, TritonIo, TsCard, TsModeRecord
from triton_models.names import CHANNEL_SCORES, MODE, POOLED_STREAM, SCORE, STEP_SCORES, STREAM, WINDOW
from triton_models.timeseries.detector import ModelConfig, TimeSeriesDetector
from triton_models.timeseries.training import FitReport

MODEL_NAME = "ts_diffusion"
DESCRIPTION = "Conditional DDPM over sensor windows; anomaly score = imputation or reconstruction error"
SCORE_SEMANTICS = (
    "window score of the window ENDING at its last row, on the stream's own calibrated scale: 0 = its median normal "
    "window, 1.0 = its alarm level; alarm when SCORE > threshold (1.0)"
)

MODEL_PY = '''"""Triton entry point; the model lives in the installed ``triton_models`` package."""

from triton_models.timeseries.serving import TritonPythonModel

__all__ = ["TritonPythonModel"]
'''


def config_pbtxt(
    config: ModelConfig,
    max_batch_size: int = 64,
    queue_delay_us: int = 2000,
    kind: str = "KIND_CPU",
    threads: int = 1,
    instances: int = 1,
) -> str:
    """SCORE is [-1, 1] on the wire: Triton rejects an empty per-item shape in a batching model (dims: [ ]).
    KIND_CPU for this project's CPU machines; on a GPU host use ``kind="KIND_GPU"`` (the model then runs on CUDA).
    ``instances`` model instances per server (``triton.instance_count``), each a python stub process."""
    length, channels = config.window, len(config.channels)
    return f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {max_batch_size}
dynamic_batching {{
  max_queue_delay_microseconds: {queue_delay_us}
}}
input [
  {{ name: "{WINDOW}" data_type: TYPE_FP32 dims: [ {length}, {channels} ] }},
  {{ name: "{STREAM}" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "{MODE}" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "{SCORE}" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "{STEP_SCORES}" data_type: TYPE_FP32 dims: [ {length} ] }},
  {{ name: "{CHANNEL_SCORES}" data_type: TYPE_FP32 dims: [ {channels} ] }}
]
instance_group [ {{ count: {instances} kind: {kind} }} ]
parameters {{ key: "TORCH_NUM_THREADS" value: {{ string_value: "{threads}" }} }}
"""


def _model_card(
    detector: TimeSeriesDetector,
    report: FitReport,
    source: str,
    seconds: float,
    sample_period_s: float,
    evaluation: dict[str, Any] | None,
) -> TsCard:
    config = detector.config
    length, channels = config.window, len(config.channels)
    io = TritonIo(
        inputs={
            WINDOW: TensorSpec(dtype="FP32", dims=[-1, length, channels]),
            STREAM: TensorSpec(dtype="BYTES", dims=[-1, 1]),
            MODE: TensorSpec(dtype="BYTES", dims=[-1, 1]),
        },
        outputs={
            SCORE: TensorSpec(dtype="FP32", dims=[-1, 1]),
            STEP_SCORES: TensorSpec(dtype="FP32", dims=[-1, length]),
            CHANNEL_SCORES: TensorSpec(dtype="FP32", dims=[-1, channels]),
        },
        score_semantics=SCORE_SEMANTICS,
    )
    modes = {
        mode: TsModeRecord(
            threshold=calibration.served_threshold(),
            channel_error_scale=calibration.stream(POOLED_STREAM).channel_scale,
            held_out_score_quantiles={
                str(q): float(np.quantile(np.concatenate(list(report.calibration_scores[mode].values())), q))
                for q in (0.5, 0.9, 0.99)
            },
        )
        for mode, calibration in detector.calibration.items()
    }
    training = Training(
        settings={"epochs": len(report.losses)},
        seconds=seconds,
        final_loss=report.losses[-1],
        data={
            "source": source,
            "rows": report.rows,
            "train_windows": report.train_windows,
            "calibration_windows": report.calibration_windows,
        },
    )
    return TsCard(
        model=MODEL_NAME,
        description=DESCRIPTION,
        io=io,
        training=training,
        config=config.to_json(),
        window=config.window,
        stride=config.stride,
        channels=config.channels,
        slow_channels=[config.channels[i] for i in config.slow_channels],
        default_mode=detector.default_mode,
        modes=modes,
        sample_period_s=sample_period_s,
        streams=sorted(stream for stream in detector.normalizer.stats if stream != POOLED_STREAM),
        evaluation=evaluation,
    )


def write_model_repository(
    detector: TimeSeriesDetector,
    report: FitReport,
    repository: Path,
    source: str,
    seconds: float,
    sample_period_s: float = 1.0,
    evaluation: dict[str, Any] | None = None,
    instances: int = 1,
) -> Path:
    """Write the model directory of a detector fitted by ``fit_detector`` (``report``) in ``seconds`` on the data
    named ``source``; ``evaluation``: benchmark metrics for the card; ``instances``: see :func:`config_pbtxt`."""
    directory = Path(repository) / MODEL_NAME
    detector.save(directory / "1")
    (directory / "1" / "model.py").write_text(MODEL_PY)
    (directory / "config.pbtxt").write_text(config_pbtxt(detector.config, instances=instances))
    _model_card(detector, report, source, seconds, sample_period_s, evaluation).write(directory)
    return directory
