"""Small real models for the demo, the must-show test and the benchmark, trained once and cached.

- ``ts_diffusion``: SKAB's anomaly-free file plus the first ``TS_CALIBRATION_ROWS`` rows of the replayed
  experiment as that asset's own training data (the SKAB protocol: those rows are normal, and they make the asset
  known to the model, i.e. normalised per stream and admitted by the asset registry).
- ``video_diffusion``: a few Ped2 training clips (the last one held out for the label-free threshold).

The cache key is a hash of everything that shapes a model (:class:`DemoModels`, the data location and the model
package's code); it is kept in ``<state_dir>/demo-models.json`` next to the trained model directories of
``model_repository``. Same key and the model directory still there: nothing is trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from core.settings import Settings
from triton_models.model_card import CARD_FILE
from triton_models.model_card import SCHEMA_VERSION as CARD_SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
TS_CALIBRATION_ROWS = 400  # SKAB protocol: the first 400 rows of each experiment are normal (training)
CACHE_FILE = "demo-models.json"


@dataclass(frozen=True)
class DemoModels:
    """What the demo trains: small enough for a couple of minutes on 2 CPU cores."""

    sensor_file: str = "skab/valve1/13.csv"  # replayed; its anomaly (rows 570-968) is caught by this small model
    ts_epochs: int = 3
    ts_window: int = 32
    video_train_clips: int = 4  # the first 4 Ped2 training clips: 3 to train, 1 to set the threshold
    video_steps: int = 150
    video_batch: int = 16
    video_base_channels: int = 16
    seed: int = 0

    @property
    def asset(self) -> str:
        """The asset id of the replayed experiment, e.g. ``valve1-13``: the stream name the model knows."""
        path = Path(self.sensor_file)
        return f"{path.parent.name}-{path.stem}"

    def key(self, part: str, data_dir: Path, frames: dict, instances: int) -> str:
        """Settings, data location, frame settings (video), Triton instances per model (in config.pbtxt), the model
        card schema and the model code: the family's package and the modules it shares with the other (a changed
        model package or card layout retrains)."""
        fields = {k: v for k, v in asdict(self).items() if k.startswith(part) or k in ("seed", "sensor_file")}
        models = REPO_ROOT / "triton_models"
        package = models / {"ts": "timeseries", "video": "video"}[part]
        sources = sorted(package.glob("*.py")) + sorted(models.glob("*.py"))
        code = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
        frames = frames if part == "video" else {}
        payload = json.dumps(
            {
                **fields,
                "data": str(data_dir),
                "code": code,
                "frames": frames,
                "instances": instances,
                "card_schema": CARD_SCHEMA_VERSION,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def data_dir(settings: Settings) -> Path:
    """``settings.data_dir``, relative to the repository root unless absolute."""
    path = settings.data_dir if settings.data_dir.is_absolute() else REPO_ROOT / settings.data_dir
    return path.resolve()


def _one_torch_thread() -> None:
    import torch

    # On a busy 2-core machine two intra-op threads spin against each other: training ran 6x slower with 2.
    torch.set_num_threads(1)


def train_ts(settings: Settings, models: DemoModels) -> Path:
    from triton_models.timeseries.data import read_table
    from triton_models.timeseries.detector import ModelConfig
    from triton_models.timeseries.repository import write_model_repository
    from triton_models.timeseries.training import fit_detector

    _one_torch_thread()
    root = data_dir(settings)
    normal = read_table(root / "skab" / "anomaly-free" / "anomaly-free.csv")
    replayed = read_table(root / models.sensor_file, normal.channels)
    tables = {"anomaly-free": normal.values, models.asset: replayed.values[:TS_CALIBRATION_ROWS]}
    config = ModelConfig(channels=normal.channels, window=models.ts_window, seed=models.seed)
    started = time.perf_counter()
    detector, report = fit_detector(tables, config, models.ts_epochs)
    seconds = time.perf_counter() - started
    # SKAB samples once a second.
    return write_model_repository(
        detector, report, settings.model_repository, "skab", seconds, 1.0, instances=settings.triton.instance_count
    )


def train_video(settings: Settings, models: DemoModels) -> Path:
    from triton_models.video.config import VideoModelConfig
    from triton_models.video.train import TrainSettings, fit

    _one_torch_thread()
    root = data_dir(settings) / "ped2" / "training"
    clips = sorted(p for p in root.iterdir() if p.is_dir())[: models.video_train_clips]
    with _clip_subset(clips) as subset:
        config = VideoModelConfig(
            height=settings.video.height, width=settings.video.width, base_channels=models.video_base_channels
        )
        train = TrainSettings(steps=models.video_steps, batch_size=models.video_batch, seed=models.seed)
        fitted = fit(
            subset, settings.model_repository, config, train, 1, 0.99, instances=settings.triton.instance_count
        )
    return fitted.model_dir


@contextlib.contextmanager
def _clip_subset(clips: list[Path]) -> Iterator[Path]:
    """A temporary folder of symlinks to the chosen clips (``fit`` takes a folder of clip folders)."""
    with tempfile.TemporaryDirectory(prefix="diffsentry-clips-") as tmp:
        folder = Path(tmp) / "training"
        folder.mkdir()
        for clip in clips:
            (folder / clip.name).symlink_to(clip, target_is_directory=True)
        yield folder


def ensure_models(settings: Settings, models: DemoModels, force: bool = False) -> dict[str, str]:
    """Trains what is missing or was trained with other settings; returns model -> "trained" or "cached"."""
    cache_path = settings.state_dir / CACHE_FILE
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    root = data_dir(settings)
    outcome = {}
    for model, part, trainer in (("ts_diffusion", "ts", train_ts), ("video_diffusion", "video", train_video)):
        key = models.key(part, root, settings.video.model_dump(), settings.triton.instance_count)
        present = (settings.model_repository / model / CARD_FILE).exists()
        if not force and present and cache.get(model) == key:
            outcome[model] = "cached"
            continue
        typer.echo(f"training {model} (small: a few minutes on 2 cores; cached for the next run)")
        trainer(settings, models)
        cache[model] = key
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=2))
        outcome[model] = "trained"
    return outcome
