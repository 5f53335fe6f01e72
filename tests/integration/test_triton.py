"""Triton of the local stack serves the repository's python-backend models with this source tree's code."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
import tritonclient.http.aio as httpclient

from core.settings import Settings
from infra.processes import StackError
from infra.stack import load_model, unload_model
from triton_models.paths import PING_MODEL, SOURCE_ROOT, TEMPLATE_REPOSITORY

pytestmark = pytest.mark.integration

# Without it tritonclient.http.aio asks for gzip and every response is compressed.
IDENTITY = {"Accept-Encoding": "identity"}


def _batch() -> np.ndarray:
    return np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5


async def test_grpc_aio_inference_echoes_and_runs_this_source_tree(local_stack: Settings) -> None:
    client = grpcclient.InferenceServerClient(local_stack.triton.grpc_urls[0])
    try:
        request = grpcclient.InferInput("INPUT", [3, 4], "FP32")
        request.set_data_from_numpy(_batch())
        result = await client.infer(PING_MODEL, [request])
    finally:
        await client.close()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), _batch())
    assert {root.decode() for root in result.as_numpy("SOURCE_ROOT").ravel()} == {str(SOURCE_ROOT)}


async def test_http_aio_inference_echoes(local_stack: Settings) -> None:
    client = httpclient.InferenceServerClient(local_stack.triton.http_url)
    try:
        request = httpclient.InferInput("INPUT", [3, 4], "FP32")
        request.set_data_from_numpy(_batch(), binary_data=True)
        result = await client.infer(PING_MODEL, [request], headers=IDENTITY)
        ready = await client.is_model_ready(PING_MODEL, headers=IDENTITY)
    finally:
        await client.close()
    assert ready
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), _batch())


async def test_a_model_written_after_start_is_served_after_load_model(local_stack: Settings) -> None:
    name = "ping_written_later"
    target = local_stack.model_repository / name
    shutil.copytree(TEMPLATE_REPOSITORY / PING_MODEL, target)
    config = target / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{PING_MODEL}"', f'name: "{name}"'))
    load_model(local_stack, name)
    client = grpcclient.InferenceServerClient(local_stack.triton.grpc_urls[0])
    try:
        request = grpcclient.InferInput("INPUT", [1, 2], "FP32")
        request.set_data_from_numpy(np.array([[1.0, -2.0]], dtype=np.float32))
        result = await client.infer(name, [request])
    finally:
        await client.close()
        unload_model(local_stack, name)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT"), [[1.0, -2.0]])


def test_load_model_reports_why_a_broken_model_fails(local_stack: Settings) -> None:
    name = "broken_model"
    (local_stack.model_repository / name / "1").mkdir(parents=True)
    (local_stack.model_repository / name / "config.pbtxt").write_text(
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        'input [{ name: "X" data_type: TYPE_FP32 dims: [1] }]\noutput [{ name: "Y" data_type: TYPE_FP32 dims: [1] }]\n'
    )
    (local_stack.model_repository / name / "1" / "model.py").write_text("raise RuntimeError('weights missing')\n")
    with pytest.raises(StackError, match="weights missing"):
        load_model(local_stack, name)
