"""Deterministic scorer with the video_diffusion I/O contract (test stand-in, not a diffusion model)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            frames = pb_utils.get_input_tensor_by_name(request, "FRAMES").as_numpy().astype(np.float32)
            heat = np.abs(frames[:, -1] - frames[:, :-1].mean(axis=1)) / 255.0
            score = heat.mean(axis=(1, 2))
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("SCORE", score.astype(np.float32)[:, None]),
                        pb_utils.Tensor("MAP", heat.astype(np.float32)),
                    ]
                )
            )
        return responses
