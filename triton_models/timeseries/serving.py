"""Triton python-backend model for ``ts_diffusion`` (``1/model.py`` in the repository re-exports this class).

I/O contract (the stream pipeline codes against exactly these names):
inputs  WINDOW FP32 [-1, L, C] raw values, channels in model-card order; STREAM BYTES [-1, 1] stream id (unknown ->
        pooled ``default`` normalisation); MODE BYTES [-1, 1] ``imputation`` | ``reconstruction``;
outputs SCORE FP32 [-1, 1] (Triton allows no empty per-item shape when batching), STEP_SCORES FP32 [-1, L],
        CHANNEL_SCORES FP32 [-1, C].
All requests of one dynamic batch are scored in a single call; per-window noise is fixed, so a window's scores do
not depend on which other windows share its batch. The model runs on CUDA when the instance has a GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from triton_models.names import MODE, SCORE, STREAM, TS_OUTPUTS, WINDOW
from triton_models.timeseries.detector import TimeSeriesDetector


def _strings(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb_utils = pb_utils
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("TORCH_NUM_THREADS", {}).get("string_value")
        if threads:
            torch.set_num_threads(int(threads))
        gpu = args.get("model_instance_kind") == "GPU" and torch.cuda.is_available()
        device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
        directory = Path(args["model_repository"]) / args["model_version"]
        self.detector = TimeSeriesDetector.load(directory, device=device)

    def execute(self, requests: list) -> list:
        pb_utils = self.pb_utils
        windows, streams, modes, sizes = [], [], [], []
        for request in requests:
            window = pb_utils.get_input_tensor_by_name(request, WINDOW).as_numpy()
            windows.append(window.astype(np.float32, copy=False))
            streams += _strings(pb_utils.get_input_tensor_by_name(request, STREAM).as_numpy())
            modes += _strings(pb_utils.get_input_tensor_by_name(request, MODE).as_numpy())
            sizes.append(len(window))
        try:
            scores = self.detector.score(np.concatenate(windows), streams, modes)
        except ValueError as error:
            # Attribute the error: score each request of the merged batch alone, so only the bad one fails.
            if len(requests) == 1:
                return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error)))]
            return [response for request in requests for response in self.execute([request])]
        responses, offset = [], 0
        for size in sizes:
            scores_of_request = {name: scores[name][offset : offset + size] for name in TS_OUTPUTS}
            scores_of_request[SCORE] = scores_of_request[SCORE][:, None]
            tensors = [pb_utils.Tensor(name, values) for name, values in scores_of_request.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            offset += size
        return responses
