"""``diffsentry ingest video``: decode a file, an RTSP/HTTP stream or a folder of frames and publish VideoFrames.

Each message is keyed by camera id; its value is the frame at model resolution (raw uint8 or JPEG, see
operators.video_source) and its metadata travels as the JSON header ``diffsentry-frame``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from core.contracts import FRAME_HEADER, VideoFrame
from core.settings import Settings, get_settings
from infra import kafka
from infra.kafka import create_declared_topics
from operators.video_source import (
    Encoding,
    ResilientSource,
    SourceStats,
    encode_frame,
    is_stream_url,
    iter_container,
    iter_folder,
    sampled_model_frames,
)
from triton_models.progress import progress_bar


def parse_size(size: str) -> tuple[int, int]:
    """``"96x64"`` -> (96, 64)."""
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError as error:
        raise typer.BadParameter(f"size must look like 96x64, got {size!r}") from error
    if width <= 0 or height <= 0:
        raise typer.BadParameter(f"size must be positive, got {size!r}")
    return width, height


def open_frames(source: str, fps: float, loop: bool, stats: SourceStats) -> ResilientSource:
    live = is_stream_url(source) and not source.startswith("file:")
    if not live and Path(source).is_dir():
        opener = partial(iter_folder, Path(source), fps, stats)
    else:
        if not live and not Path(source).exists():
            raise typer.BadParameter(f"no such file or folder: {source}")
        opener = partial(iter_container, source, stats)
    return ResilientSource(opener, stats, loop=loop, live=live)


async def publish_frames(
    settings: Settings,
    frames: Iterator[tuple[float, np.ndarray]],
    camera: str,
    encoding: Encoding,
    live: bool,
    realtime: bool = False,
    progress: bool = True,
) -> int:
    """Send every (source time, frame) to the video topic; returns the number of frames published."""
    await create_declared_topics(settings)
    producer = kafka.producer(settings.kafka, "video-ingest", linger_ms=5)
    await producer.start()
    started = time.time()
    sent = 0
    pending = []
    bar = progress_bar(desc=f"ingest {camera}", unit="frame", disable=not progress, mininterval=1.0)
    try:
        while (item := await asyncio.to_thread(next, frames, None)) is not None:
            pts, frame = item
            event_time = time.time() if live else started + pts
            if realtime and not live and event_time > time.time():
                await asyncio.sleep(event_time - time.time())
            meta = VideoFrame(
                camera=camera,
                seq=sent,
                event_time=event_time,
                width=frame.shape[1],
                height=frame.shape[0],
                encoding=encoding,
            )
            value = encode_frame(frame, encoding, settings.video.jpeg_quality)
            pending.append(
                await producer.send(
                    settings.topics.video_frames,
                    value=value,
                    key=camera.encode(),
                    headers=[(FRAME_HEADER, meta.to_json())],
                )
            )
            sent += 1
            bar.update()
            if len(pending) >= 256:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        bar.close()
        await producer.stop()
    return sent


def ingest(
    source: Annotated[str, typer.Option("--source", help="Video file, rtsp:// or http:// URL, or folder of frames.")],
    camera: Annotated[str, typer.Option("--camera", help="Camera id: the Kafka key and the score's stream name.")],
    fps: Annotated[float | None, typer.Option("--fps", help="Sampling rate (default: settings.video.fps).")] = None,
    size: Annotated[str | None, typer.Option("--size", help="Model resolution WxH (default: settings.video).")] = None,
    loop: Annotated[bool, typer.Option("--loop", help="Restart a file or folder at its end.")] = False,
    encoding: Annotated[str | None, typer.Option("--encoding", help="raw or jpeg (default: settings).")] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace a file or folder at its sampled rate.")] = False,
) -> None:
    """Publish video frames of one camera to the video-frames topic."""
    settings = get_settings()
    rate = fps or settings.video.fps
    width, height = parse_size(size) if size else (settings.video.width, settings.video.height)
    chosen = encoding or settings.video.encoding
    if chosen not in ("raw", "jpeg"):
        raise typer.BadParameter(f"encoding must be raw or jpeg, got {chosen!r}")
    stats = SourceStats()
    frames = sampled_model_frames(iter(open_frames(source, rate, loop, stats)), rate, width, height, stats)
    live = is_stream_url(source) and not source.startswith("file:")
    sent = asyncio.run(publish_frames(settings, frames, camera, chosen, live, realtime))  # type: ignore[arg-type]
    typer.echo(
        f"published {sent} frames of {camera} to {settings.topics.video_frames} "
        f"(decoded {stats.decoded}, corrupt skipped {stats.corrupt}, reconnects {stats.reconnects})"
    )
