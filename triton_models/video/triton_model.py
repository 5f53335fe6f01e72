"""Triton python-backend adapter of the video model (copied to ``video_diffusion/1/model.py``).

Input FRAMES uint8 [B, K+1, H, W] (K past frames, then the current one, at model resolution, grayscale);
outputs SCORE fp32 [B] and MAP fp32 [B, h, w]. All requests of one dynamic batch are scored in one forward pass;
scores do not depend on the batch (see triton_models.video.diffusion).
"""

import json
from pathlib import Path

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from triton_models.names import FRAMES, MAP, SCORE
from triton_models.video.repository import load_model


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        threads = config.get("parameters", {}).get("TORCH_THREADS", {}).get("string_value", "2")
        torch.set_num_threads(int(threads))
        self.model = load_model(Path(args["model_repository"]) / args["model_version"])
        cfg = self.model.config
        self.expected = (cfg.context + 1, cfg.height, cfg.width)

    def execute(self, requests: list) -> list:
        batches = [pb_utils.get_input_tensor_by_name(r, FRAMES).as_numpy() for r in requests]
        valid = [b.shape[1:] == self.expected for b in batches]
        good = [b for b, ok in zip(batches, valid, strict=True) if ok]
        if good:
            scores, maps = self.model.score(torch.from_numpy(np.ascontiguousarray(np.concatenate(good))))
            scores, maps = scores.numpy().astype(np.float32), maps.numpy().astype(np.float32)
        responses, start = [], 0
        for batch, ok in zip(batches, valid, strict=True):
            if not ok:
                error = pb_utils.TritonError(
                    f"{FRAMES} must be [B, {', '.join(map(str, self.expected))}], got {batch.shape}"
                )
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            end = start + len(batch)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(SCORE, scores[start:end]),
                        pb_utils.Tensor(MAP, maps[start:end]),
                    ]
                )
            )
            start = end
        return responses
