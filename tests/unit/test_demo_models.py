"""The demo's model cache key and the replayed asset's id."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings
from pipeline.demo import DEMO_ALERTING, run_settings
from pipeline.demo_models import REPO_ROOT, DemoModels, data_dir


def test_asset_id_names_the_replayed_experiment() -> None:
    assert DemoModels().asset == "valve1-13"
    assert DemoModels(sensor_file="skab/other/5.csv").asset == "other-5"


def test_cache_key_changes_only_with_what_shapes_that_model() -> None:
    data, frames = Path("/data"), {"width": 144, "height": 96}
    base = DemoModels()
    assert base.key("ts", data, frames, 2) == DemoModels().key("ts", data, frames, 2)
    assert base.key("ts", data, frames, 2) != DemoModels(ts_epochs=4).key("ts", data, frames, 2)
    assert base.key("video", data, frames, 2) == DemoModels(ts_epochs=4).key("video", data, frames, 2)
    assert base.key("video", data, frames, 2) != DemoModels(video_steps=10).key("video", data, frames, 2)
    assert base.key("ts", data, frames, 2) != base.key("ts", Path("/elsewhere"), frames, 2)
    smaller = {"width": 96, "height": 64}
    assert base.key("video", data, frames, 2) != base.key("video", data, smaller, 2)  # frames of another size retrain
    assert base.key("ts", data, frames, 2) == base.key("ts", data, smaller, 2)
    assert base.key("video", data, frames, 2) != base.key("video", data, frames, 1)  # config.pbtxt's instance count


def test_relative_data_dir_is_taken_from_the_repository_root(tmp_path: Path) -> None:
    assert data_dir(Settings(data_dir=Path("../shared/data"))) == (REPO_ROOT / "../shared/data").resolve()
    assert data_dir(Settings(data_dir=tmp_path)) == tmp_path


def test_each_demo_run_gets_its_own_topics_group_and_state(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    first, second = run_settings(settings, "demo-1"), run_settings(settings, "demo-2")
    assert first.topics.sensor_readings != second.topics.sensor_readings
    assert first.kafka.consumer_group != second.kafka.consumer_group
    assert first.state_dir != second.state_dir and first.state_dir.is_relative_to(tmp_path.resolve())
    assert first.alerting == DEMO_ALERTING
