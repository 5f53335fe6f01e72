"""Video against the real local services: Triton scores equal in-process scores; ingest publishes every sample."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.http as httpclient
from aiokafka import AIOKafkaConsumer

from core.contracts import FRAME_HEADER, VideoFrame, decode
from infra.services import triton_only
from operators.frames import decode_frame
from operators.video_source import write_synthetic_clip
from pipeline.video_triton import score_through_triton
from triton_models.model_card import ServedThreshold, Training
from triton_models.names import FRAMES, MAP, OPTICAL_FLOW, RECONSTRUCT, SCORE
from triton_models.video.config import VideoModelConfig
from triton_models.video.diffusion import FrameDiffusion, score_batches
from triton_models.video.frames import causal_windows
from triton_models.video.repository import MODEL_NAME, export_model

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
THRESHOLD = ServedThreshold(value=0.01, method="fixed", rule="untrained test model")
TRAINING = Training(settings={}, seconds=0.0, final_loss=1.0, data={"synthetic": True})


def test_triton_scores_equal_in_process_scores(local_stack) -> None:
    settings = local_stack
    config = VideoModelConfig(height=32, width=48, context=4, base_channels=8, ddim_steps=3)
    torch.manual_seed(3)
    model = FrameDiffusion(config).eval()
    export_model(model, settings.model_repository, THRESHOLD, TRAINING, {}, [1.0, 0.5], instances=1)
    rng = np.random.default_rng(0)
    windows = causal_windows(rng.integers(0, 256, (10, 32, 48), dtype=np.uint8), config.context)
    expected_scores, expected_maps = score_batches(model, windows)

    client = httpclient.InferenceServerClient(settings.triton.http_url)
    client.load_model(MODEL_NAME)
    try:
        scores, maps = [], []
        for batch in (windows[:1], windows[1:4], windows[4:]):  # different batch compositions
            request = httpclient.InferInput(FRAMES, list(batch.shape), "UINT8")
            request.set_data_from_numpy(batch)
            result = client.infer(MODEL_NAME, [request])
            assert result.as_numpy(SCORE).shape == (len(batch), 1)
            scores.append(result.as_numpy(SCORE)[:, 0])
            maps.append(result.as_numpy(MAP))
        np.testing.assert_allclose(np.concatenate(scores), expected_scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.concatenate(maps), expected_maps, rtol=1e-5, atol=1e-7)
        assert np.concatenate(maps).shape == (10, *config.map_shape)

        wrong = httpclient.InferInput(FRAMES, [1, 3, 32, 48], "UINT8")
        wrong.set_data_from_numpy(windows[:1, :3].copy())
        with pytest.raises(Exception, match=FRAMES):
            client.infer(MODEL_NAME, [wrong])
    finally:
        client.unload_model(MODEL_NAME)
        client.close()


def test_evaluation_triton_serves_a_fresh_repository_with_the_chosen_scoring(tmp_path: Path) -> None:
    """``evaluate video`` measures Triton with the stack's Triton alone (infra.services.triton_only) on the
    repository it just wrote; a model saved with reconstruct scoring, the copy ratio and the optical-flow blend
    (OpenCV in Triton's python backend) gives the in-process scores there too."""
    config = VideoModelConfig(
        height=32,
        width=48,
        context=2,
        base_channels=8,
        ddim_steps=2,
        scoring=RECONSTRUCT,
        copy_ratio_floor=0.01,
        motion_weight=0.5,
        motion=OPTICAL_FLOW,
    )
    torch.manual_seed(4)
    model = FrameDiffusion(config).eval()
    export_model(model, tmp_path, THRESHOLD, TRAINING, {}, [1.0], instances=1)
    rng = np.random.default_rng(1)
    windows = causal_windows(rng.integers(0, 256, (12, 32, 48), dtype=np.uint8), config.context)
    expected_scores, expected_maps = score_batches(model, windows)
    with triton_only(tmp_path) as grpc_url:
        scores, maps, seconds = asyncio.run(score_through_triton(grpc_url, MODEL_NAME, windows, concurrency=4))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps, expected_maps, rtol=1e-5, atol=1e-7)
    assert seconds > 0


async def _consume(bootstrap_servers: str, topic: str, expected: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    records = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                records.extend(batch)
        batches = await consumer.getmany(timeout_ms=1000)  # anything beyond the expected count shows up too
        for batch in batches.values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


def test_ingest_video_cli_puts_every_sampled_frame_on_the_topic(local_stack, tmp_path: Path) -> None:
    settings = local_stack
    clip = tmp_path / "clip.mp4"
    write_synthetic_clip(clip, frames=60, fps=30)  # 2 s at 30 fps, sampled at 10 fps -> 20 frames
    topic = f"video-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "DIFFSENTRY_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "DIFFSENTRY_TOPICS__VIDEO_FRAMES": topic,
    }
    command = [sys.executable, "-m", "pipeline.cli", "ingest", "video", "--source", str(clip), "--camera", "cam1"]
    command += ["--fps", "10", "--size", "96x64"]
    completed = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "published 20 frames" in completed.stdout

    records = asyncio.run(_consume(settings.kafka.bootstrap_servers, topic, expected=20))
    assert len(records) == 20
    assert {r.key for r in records} == {b"cam1"}
    metas = sorted((decode(VideoFrame, dict(r.headers)[FRAME_HEADER]) for r in records), key=lambda m: m.seq)
    assert [m.seq for m in metas] == list(range(20))
    assert all(m.camera == "cam1" and (m.width, m.height) == (96, 64) for m in metas)
    assert np.diff([m.event_time for m in metas]) == pytest.approx([0.1] * 19, abs=1e-4)
    frame = decode_frame(metas[0], records[0].value, height=64, width=96)
    assert frame.shape == (64, 96) and frame.std() > 0
    assert json.loads(dict(records[0].headers)[FRAME_HEADER])["schema"] == "video_frame"
