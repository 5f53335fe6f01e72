"""Deterministic scorer with the ts_diffusion I/O contract (test stand-in, not a diffusion model)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            windows = pb_utils.get_input_tensor_by_name(request, "WINDOW").as_numpy().astype(np.float64)
            median = np.median(windows, axis=1, keepdims=True)
            spread = np.median(np.abs(windows - median), axis=1, keepdims=True) + 1e-3
            deviation = np.abs(windows - median) / spread
            step_scores = deviation.mean(axis=2)
            channel_scores = deviation.mean(axis=1)
            score = step_scores.max(axis=1)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("SCORE", score.astype(np.float32)[:, None]),
                        pb_utils.Tensor("STEP_SCORES", step_scores.astype(np.float32)),
                        pb_utils.Tensor("CHANNEL_SCORES", channel_scores.astype(np.float32)),
                    ]
                )
            )
        return responses
