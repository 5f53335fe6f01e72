"""``diffsentry run`` as a subprocess: how the demo, the end-to-end benchmark and the integration tests start a worker.

The worker runs exactly as deployed, configured by one YAML file (``DIFFSENTRY_CONFIG``) that holds all of its
settings, and is watched from outside like an operator would: ``/healthz``, ``/metrics`` and the subscriptions API.

- Ports set to 0 (``stream.metrics_port``, ``api.port``) are chosen here, so the caller knows the URLs.
- Relative ``state_dir`` and ``model_repository`` are resolved against the caller's directory; the worker runs in
  its state dir with this source tree on ``PYTHONPATH`` (it imports the caller's code, not an installed copy), and
  without the caller's ``DIFFSENTRY_*`` variables, which would override the file.
- Its config and log (``worker-<metrics port>.yaml`` and ``.log``) lie in ``work_dir`` (default: its state dir).
- It runs in a session of its own (a Ctrl-C in the caller's terminal does not reach it); :meth:`stop` sends
  SIGTERM and SIGKILL after ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from core.private_files import write_private_text
from core.settings import Settings
from infra.processes import free_port
from pipeline.prometheus_text import parse_metrics
from triton_models.paths import SOURCE_ROOT


def resolved_settings(settings: Settings) -> Settings:
    """``settings`` with free ports in place of 0 and absolute state paths: what the subprocess is given."""
    stream, api = settings.stream, settings.api
    return settings.model_copy(
        update={
            "stream": stream.model_copy(update={"metrics_port": stream.metrics_port or free_port()}),
            "api": api.model_copy(update={"port": api.port or free_port()}),
            "state_dir": settings.state_dir.resolve(),
            "model_repository": settings.model_repository.resolve(),
        }
    )


def worker_environment(config: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without its ``DIFFSENTRY_*`` variables, plus the config file and this source tree."""
    environ = dict(os.environ if environ is None else environ)
    env = {k: v for k, v in environ.items() if not k.startswith("DIFFSENTRY_")}
    env["DIFFSENTRY_CONFIG"] = str(config)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), environ.get("PYTHONPATH")) if p)
    return env


class WorkerProcess:
    """One ``diffsentry run`` subprocess (``role``: its ``--role``)."""

    def __init__(
        self, settings: Settings, work_dir: Path | None = None, log_level: str = "WARNING", role: str = "all"
    ) -> None:
        self.settings = resolved_settings(settings)
        self.role = role
        self.work_dir = (work_dir or self.settings.state_dir).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        port = self.settings.stream.metrics_port
        self.config = self.work_dir / f"worker-{port}.yaml"
        write_private_text(self.config, yaml.safe_dump(self.settings.model_dump(mode="json")))  # it holds the API token
        self.log = self.work_dir / f"worker-{port}.log"
        self.log_level = log_level
        self.metrics_url = f"http://{self.settings.stream.metrics_host}:{port}"
        self.api_url = f"http://{self.settings.api.host}:{self.settings.api.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "run", "--role", self.role, "--log-level", self.log_level],
                cwd=self.settings.state_dir,
                env=worker_environment(self.config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until ``/healthz`` answers 200 (the worker consumes); raises if it exits or the time runs out."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                try:
                    if (await client.get(f"{self.metrics_url}/healthz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the worker exited with {self.process.returncode}:\n{self.log_tail()}")
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the worker was not consuming after {timeout_s:.0f} s; log {self.log}:\n{self.log_tail()}")

    async def metrics(self, client: httpx.AsyncClient | None = None) -> dict[str, float]:
        """The worker's Prometheus samples, ``{'name{labels}': value}``."""
        if client is not None:
            return parse_metrics((await client.get(f"{self.metrics_url}/metrics")).raise_for_status().text)
        async with httpx.AsyncClient(timeout=5) as own:
            return await self.metrics(own)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (the worker drains and commits), SIGKILL if it is still running after ``timeout_s``."""
        if not self.running():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, no final commit."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
