"""The console's camera gallery: per camera its latest scored frame with the anomaly map, and for each video alert
a PNG snapshot of its worst frame (frame, map overlay, box of the worst patch), kept under a folder with bounded
retention (count and age).

The video lane hands it every scored frame with its map (``operators.ports.FrameObserver``); the alerting
service hands it every video score with the alert transitions it caused. Frames are kept for the last few event
times of each camera, so a score finds its own frame although lanes measure concurrently.
"""

from __future__ import annotations

import io
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.contracts import Alert, Score

RECENT_FRAMES = 16  # per camera: enough for the scores in flight to find their frame
MIN_WIDTH = 432  # frames are scaled up to at least this width so the map and the box are visible
OVERLAY = (255, 48, 0)
BOX = (255, 230, 0)


@dataclass
class _Camera:
    frames: OrderedDict[float, tuple[np.ndarray, np.ndarray]]  # event time -> (frame, map)
    last: Score | None = None


@dataclass
class _OpenAlert:
    alert_id: str
    worst: float


@dataclass(frozen=True)
class SnapshotInfo:
    """A video alert's snapshot: whose it is and the score and event time of the frame it shows."""

    alert_id: str
    camera: str
    severity: str
    started_at: float
    event_time: float
    score: float


def overlay_png(frame: np.ndarray, anomaly_map: np.ndarray, box: bool) -> bytes:
    """The grayscale frame with the map in red (opacity: the map relative to its peak) and, with ``box``, the
    outline of the map's worst cell."""
    height, width = frame.shape
    scale = max(1, -(-MIN_WIDTH // width))
    size = (width * scale, height * scale)
    image = Image.fromarray(frame).convert("RGB").resize(size, Image.Resampling.NEAREST)
    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    relative = (anomaly_map - low) / (high - low) if high > low else np.zeros_like(anomaly_map)
    alpha = Image.fromarray((relative**2 * 170).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    image = Image.composite(Image.new("RGB", size, OVERLAY), image, alpha)
    if box:
        rows, columns = anomaly_map.shape
        y, x = np.unravel_index(int(np.argmax(anomaly_map)), anomaly_map.shape)
        cell_h, cell_w = size[1] / rows, size[0] / columns
        ImageDraw.Draw(image).rectangle(
            [x * cell_w, y * cell_h, (x + 1) * cell_w - 1, (y + 1) * cell_h - 1], outline=BOX, width=3
        )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class CameraGallery:
    def __init__(self, snapshot_dir: Path, keep: int, max_age_s: float) -> None:
        self.snapshot_dir = snapshot_dir
        self.keep, self.max_age_s = keep, max_age_s
        self._cameras: dict[str, _Camera] = {}
        self._open: dict[str, _OpenAlert] = {}  # camera -> its firing alert and the worst score so far
        self._snapshots: dict[str, SnapshotInfo] = {}  # this run's snapshots that retention kept, by alert id

    def observe_frame(self, camera: str, event_time: float, frame: np.ndarray, anomaly_map: np.ndarray) -> None:
        frames = self._cameras.setdefault(camera, _Camera(OrderedDict())).frames
        frames[event_time] = (frame, anomaly_map)
        while len(frames) > RECENT_FRAMES:
            frames.popitem(last=False)

    def record(self, score: Score, alerts: list[Alert]) -> None:
        """A video score and its transitions: the open alert's snapshot follows its worst frame."""
        camera = self._cameras.get(score.stream)
        if camera is None:
            return
        camera.last = score
        firing = None
        for alert in alerts:
            if alert.state == "firing":
                firing = alert
                if score.stream not in self._open or self._open[score.stream].alert_id != alert.alert_id:
                    self._open[score.stream] = _OpenAlert(alert.alert_id, float("-inf"))
        open_alert = self._open.get(score.stream)
        seen = camera.frames.get(score.event_time)
        if open_alert is not None and seen is not None and score.score > open_alert.worst:
            open_alert.worst = score.score
            known = self._snapshots.get(open_alert.alert_id)
            severity = firing.severity if firing else (known.severity if known else "warning")
            started_at = firing.started_at if firing else (known.started_at if known else score.event_time)
            info = SnapshotInfo(open_alert.alert_id, score.stream, severity, started_at, score.event_time, score.score)
            self._write_snapshot(info, overlay_png(*seen, box=True))
        if any(alert.state == "resolved" for alert in alerts):
            self._open.pop(score.stream, None)

    def cameras(self) -> list[dict[str, Any]]:
        views = []
        for name, camera in sorted(self._cameras.items()):
            last = camera.last
            views.append(
                {
                    "camera": name,
                    "event_time": last.event_time if last else next(reversed(camera.frames)),
                    "score": last.score if last else None,
                    "threshold": last.threshold if last else None,
                    "is_anomaly": last.is_anomaly if last else False,
                    "alert_id": self._open[name].alert_id if name in self._open else None,
                    "snapshots": [vars(i) for i in self._snapshots.values() if i.camera == name][::-1],
                }
            )
        return views

    def latest_png(self, camera: str) -> bytes | None:
        """The camera's newest scored frame with its map; the box when that frame's score was anomalous."""
        entry = self._cameras.get(camera)
        if entry is None or entry.last is None or entry.last.event_time not in entry.frames:
            return None
        return overlay_png(*entry.frames[entry.last.event_time], box=entry.last.is_anomaly)

    def snapshot_png(self, alert_id: str) -> bytes | None:
        path = self._snapshot_path(alert_id)
        return path.read_bytes() if path is not None and path.exists() else None

    def _snapshot_path(self, alert_id: str) -> Path | None:
        if not alert_id.replace("-", "").isalnum():  # ids are "al-<hex>": nothing else names a file
            return None
        return self.snapshot_dir / f"{alert_id}.png"

    def _write_snapshot(self, info: SnapshotInfo, png: bytes) -> None:
        path = self._snapshot_path(info.alert_id)
        if path is None:
            return
        self._snapshots.pop(info.alert_id, None)
        self._snapshots[info.alert_id] = info  # newest last
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_bytes(png)
        os.replace(partial, path)
        self._prune()

    def _prune(self) -> None:
        """Snapshots older than ``max_age_s`` go, then all but the newest ``keep``."""
        now = time.time()
        by_age = sorted(self.snapshot_dir.glob("*.png"), key=lambda p: p.stat().st_mtime, reverse=True)
        for index, path in enumerate(by_age):
            if index >= self.keep or now - path.stat().st_mtime > self.max_age_s:
                path.unlink(missing_ok=True)
                self._snapshots.pop(path.stem, None)
