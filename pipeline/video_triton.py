"""A throw-away tritonserver for ``evaluate video`` (measuring Triton throughput on a fresh model repository),
and a gRPC client that scores frame windows through Triton.

The local stack (``diffsentry stack``) serves the shared model repository; evaluation starts its own server on free
ports so that it measures the model it just trained without touching a running stack.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytriton
import tritonclient.grpc.aio as grpcclient

SOURCE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TritonEndpoints:
    http_url: str
    grpc_url: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stub_environment(work_dir: Path) -> Path:
    """The python backend stub ignores PYTHONPATH and imports through the ``python3`` on PATH: give it a venv whose
    .pth puts this source tree ahead of this interpreter's packages."""
    env_dir = work_dir / "stub-python"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = sysconfig.get_paths()["purelib"]
    (env_dir / "lib" / version / "site-packages" / "diffsentry-source.pth").write_text(
        f"{SOURCE_ROOT}\nimport site; site.addsitedir({site_packages!r})\n"
    )
    return env_dir


def _backend_dir(server_dir: Path, work_dir: Path) -> Path:
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for source in (
        server_dir / "backends" / "python" / "libtriton_python.so",
        server_dir / "backends" / "python" / "triton_python_backend_utils.py",
        server_dir / "python_backend_stubs" / version / "triton_python_backend_stub",
    ):
        (target / source.name).symlink_to(source)
    return target.parent


@contextmanager
def serve_repository(
    repository: Path, explicit: bool = False, ready_timeout_s: float = 180.0
) -> Iterator[TritonEndpoints]:
    """Run tritonserver on ``repository`` (CPU, 127.0.0.1, free ports) until the block ends; stops it by pid.

    ``explicit``: load no model at start; clients load them (model control mode explicit)."""
    server_dir = Path(pytriton.__file__).parent / "tritonserver"
    with tempfile.TemporaryDirectory(prefix="diffsentry-triton-") as tmp:
        work_dir = Path(tmp)
        stub_env = _stub_environment(work_dir)
        http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
        env = dict(os.environ)
        libraries = [str(server_dir.parent.parent / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [*libraries, env.get("LD_LIBRARY_PATH", "")] if p)
        env["PATH"] = os.pathsep.join([str(stub_env / "bin"), env.get("PATH", "")])
        command = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={repository.resolve()}",
            f"--backend-directory={_backend_dir(server_dir, work_dir)}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",
            "--exit-timeout-secs=10",
            *(["--model-control-mode=explicit"] if explicit else []),
        ]
        log_path = work_dir / "tritonserver.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"tritonserver exited ({process.returncode}):\n{log_path.read_text()[-3000:]}")
                try:
                    if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"tritonserver not ready in {ready_timeout_s} s:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.5)
            yield TritonEndpoints(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def score_through_triton(
    grpc_url: str, model: str, windows: np.ndarray, concurrency: int = 16, frames_per_request: int = 1
) -> tuple[np.ndarray, np.ndarray, float]:
    """Send windows [N, K+1, H, W] uint8 as ``concurrency`` parallel streams of requests (as several cameras would);
    returns scores [N], maps [N, h, w] and the wall-clock seconds."""
    client = grpcclient.InferenceServerClient(grpc_url)
    scores: list[np.ndarray | None] = [None] * len(windows)
    maps: list[np.ndarray | None] = [None] * len(windows)
    starts = list(range(0, len(windows), frames_per_request))

    async def worker(offset: int) -> None:
        for start in starts[offset::concurrency]:
            batch = windows[start : start + frames_per_request]
            request = grpcclient.InferInput("FRAMES", list(batch.shape), "UINT8")
            request.set_data_from_numpy(np.ascontiguousarray(batch))
            result = await client.infer(
                model, [request], outputs=[grpcclient.InferRequestedOutput(n) for n in ("SCORE", "MAP")]
            )
            for index, (score, anomaly_map) in enumerate(
                zip(result.as_numpy("SCORE")[:, 0], result.as_numpy("MAP"), strict=True)
            ):
                scores[start + index], maps[start + index] = score, anomaly_map

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    return np.asarray(scores, dtype=np.float32), np.stack(maps).astype(np.float32), seconds
