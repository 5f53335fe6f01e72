"""Triton python backend model `diffsentry_ping`: identity on INPUT, plus the source tree of `triton_models`."""

import numpy as np
import triton_python_backend_utils as pb_utils

from triton_models.paths import SOURCE_ROOT


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        self.source_root = np.array([str(SOURCE_ROOT).encode()], dtype=object)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            roots = np.tile(self.source_root, (values.shape[0], 1))
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("OUTPUT", values), pb_utils.Tensor("SOURCE_ROOT", roots)]
                )
            )
        return responses
