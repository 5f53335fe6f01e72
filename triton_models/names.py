"""The wire vocabulary of the served models: Triton tensor names and the names of the scoring modes.

One spelling for the Triton python models, the config.pbtxt writers, the model cards and every client
(``operators.triton_stage``, ``pipeline.video_triton``, the tests); a renamed tensor breaks them all at once.
"""

from __future__ import annotations

from typing import Literal, get_args

# ts_diffusion: WINDOW FP32 [-1, L, C] raw values, STREAM BYTES [-1, 1] asset id, MODE BYTES [-1, 1] a TsMode;
# out SCORE FP32 [-1, 1], STEP_SCORES FP32 [-1, L], CHANNEL_SCORES FP32 [-1, C].
WINDOW = "WINDOW"
STREAM = "STREAM"
MODE = "MODE"
SCORE = "SCORE"
STEP_SCORES = "STEP_SCORES"
CHANNEL_SCORES = "CHANNEL_SCORES"
TS_OUTPUTS = (SCORE, STEP_SCORES, CHANNEL_SCORES)

# video_diffusion: FRAMES UINT8 [-1, K+1, H, W] (K past frames, then the current one); out SCORE FP32 [-1, 1],
# MAP FP32 [-1, h, w].
FRAMES = "FRAMES"
MAP = "MAP"
VIDEO_OUTPUTS = (SCORE, MAP)

# The STREAM value of a model's pooled fallback (normalisation and calibration of streams it has not seen): not an
# asset id.
POOLED_STREAM = "default"

TsMode = Literal["imputation", "reconstruction"]
TS_MODES: tuple[TsMode, ...] = get_args(TsMode)
IMPUTATION, RECONSTRUCTION = TS_MODES

# How the video model predicts the frame it scores (triton_models.video.diffusion): from seeded noise, or from the
# current frame noised to a fraction of the schedule.
VideoScoring = Literal["forecast", "reconstruct"]
VIDEO_SCORINGS: tuple[VideoScoring, ...] = get_args(VideoScoring)
FORECAST, RECONSTRUCT = VIDEO_SCORINGS

# What the video score's motion blend (``motion_weight``) multiplies the model error with: the copy-last-frame error
# (frame differencing), or the magnitude of the dense optical flow from the last past frame to the current one.
VideoMotion = Literal["frame_difference", "optical_flow"]
VIDEO_MOTIONS: tuple[VideoMotion, ...] = get_args(VideoMotion)
FRAME_DIFFERENCE, OPTICAL_FLOW = VIDEO_MOTIONS
