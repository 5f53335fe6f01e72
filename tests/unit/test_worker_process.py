"""The one worker-process helper: free ports chosen up front, absolute paths, a config file that holds everything."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from core.settings import ApiSettings, Settings, StreamSettings
from pipeline.worker_process import WorkerProcess, resolved_settings, worker_environment
from triton_models.paths import SOURCE_ROOT


def test_ports_set_to_zero_are_chosen_here_and_explicit_ones_kept(tmp_path: Path) -> None:
    chosen = resolved_settings(
        Settings(state_dir=tmp_path, stream=StreamSettings(metrics_port=0), api=ApiSettings(port=0))
    )
    assert chosen.stream.metrics_port > 0 and chosen.api.port > 0
    assert chosen.stream.metrics_port != chosen.api.port
    fixed = resolved_settings(
        Settings(state_dir=tmp_path, stream=StreamSettings(metrics_port=19464), api=ApiSettings(port=18088))
    )
    assert (fixed.stream.metrics_port, fixed.api.port) == (19464, 18088)


def test_relative_state_paths_are_resolved_against_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    chosen = resolved_settings(Settings(state_dir=Path("state")))
    assert chosen.state_dir == tmp_path / "state"
    assert chosen.model_repository == tmp_path / "state" / "model_repository"


def test_the_environment_is_the_callers_without_its_diffsentry_variables() -> None:
    env = worker_environment(
        Path("/x/worker.yaml"), {"PATH": "/bin", "DIFFSENTRY_KAFKA__CLIENT_ID": "no", "PYTHONPATH": "/a"}
    )
    assert env == {"PATH": "/bin", "DIFFSENTRY_CONFIG": "/x/worker.yaml", "PYTHONPATH": f"{SOURCE_ROOT}{os.pathsep}/a"}


def test_config_and_log_lie_in_the_work_dir_and_the_config_holds_every_setting(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path / "state", stream=StreamSettings(metrics_port=0), api=ApiSettings(port=0))
    worker = WorkerProcess(settings, tmp_path / "work")
    port = worker.settings.stream.metrics_port
    assert worker.config == tmp_path / "work" / f"worker-{port}.yaml"
    assert worker.log.parent == tmp_path / "work"
    assert worker.metrics_url == f"http://127.0.0.1:{port}"
    assert worker.api_url == f"http://127.0.0.1:{worker.settings.api.port}"
    assert Settings(**yaml.safe_load(worker.config.read_text())) == worker.settings
    assert not worker.running() and worker.pid is None
    worker.stop()  # nothing started: nothing to stop
