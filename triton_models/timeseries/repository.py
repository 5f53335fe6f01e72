"""Writes ``<model-repo>/ts_diffusion/``: config.pbtxt, ``1/model.py`` adapter, weights, normalisation,
calibration (``1/``), and ``model_card.json`` next to config.pbtxt."""

from __future__ import annotations

import json
from pathlib import Path

from triton_models.timeseries.detector import TimeSeriesDetector

MODEL_NAME = "ts_diffusion"

MODEL_PY = '''"""Triton entry point; the model lives in the installed ``triton_models`` package."""

from triton_models.timeseries.serving import TritonPythonModel

__all__ = ["TritonPythonModel"]
'''

# SCORE is [-1, 1] on the wire: Triton rejects an empty per-item shape in a batching model (dims: [ ]).
# KIND_CPU for this project's CPU machines; on a GPU host use `kind: KIND_GPU` (the model then runs on CUDA).
CONFIG_TEMPLATE = """name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
dynamic_batching {{
  max_queue_delay_microseconds: {queue_delay_us}
}}
input [
  {{ name: "WINDOW" data_type: TYPE_FP32 dims: [ {length}, {channels} ] }},
  {{ name: "STREAM" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "MODE" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "SCORE" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "STEP_SCORES" data_type: TYPE_FP32 dims: [ {length} ] }},
  {{ name: "CHANNEL_SCORES" data_type: TYPE_FP32 dims: [ {channels} ] }}
]
instance_group [ {{ count: 1 kind: {kind} }} ]
parameters {{ key: "TORCH_NUM_THREADS" value: {{ string_value: "{threads}" }} }}
"""


def write_model_repository(
    detector: TimeSeriesDetector,
    repository: Path,
    card: dict,
    max_batch_size: int = 64,
    queue_delay_us: int = 2000,
    kind: str = "KIND_CPU",
    threads: int = 1,
) -> Path:
    directory = Path(repository) / MODEL_NAME
    version = directory / "1"
    detector.save(version)
    (version / "model.py").write_text(MODEL_PY)
    config = CONFIG_TEMPLATE.format(
        name=MODEL_NAME,
        max_batch_size=max_batch_size,
        queue_delay_us=queue_delay_us,
        length=detector.config.window,
        channels=len(detector.config.channels),
        kind=kind,
        threads=threads,
    )
    (directory / "config.pbtxt").write_text(config)
    (directory / "model_card.json").write_text(json.dumps(card, indent=1, default=float))
    return directory
