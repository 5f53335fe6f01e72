from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.contracts import ContractError, VideoFrame
from operators.frames import decode_frame
from operators.resilience import Backoff
from operators.video_source import (
    RateSampler,
    ResilientSource,
    SourceFrame,
    SourceStats,
    SourceUnavailable,
    encode_frame,
    iter_container,
    iter_folder,
    sampled_model_frames,
    write_synthetic_clip,
)


def test_mp4_made_with_pyav_decodes_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_synthetic_clip(path, frames=30)
    stats = SourceStats()
    frames = list(iter_container(str(path), stats))
    assert len(frames) == 30 and stats.decoded == 30 and stats.corrupt == 0
    assert frames[0].image.size == (160, 96)
    assert frames[-1].pts == pytest.approx(29 / 30)


def test_30_fps_source_sampled_at_10_fps_keeps_every_third_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    write_synthetic_clip(path, frames=90)
    stats = SourceStats()
    sampled = list(sampled_model_frames(iter_container(str(path), stats), 10.0, 96, 64, stats))
    assert len(sampled) == 30 and stats.sampled == 30 and stats.decoded == 90
    assert sampled[0][1].shape == (64, 96) and sampled[0][1].dtype == np.uint8
    assert np.diff([pts for pts, _ in sampled]) == pytest.approx([0.1] * 29)


@pytest.mark.parametrize(
    ("source_fps", "target_fps", "seconds", "expected"),
    [(30, 10, 3, 30), (25, 10, 2, 20), (10, 10, 2, 20), (10, 30, 2, 20)],
)
def test_rate_sampler_counts(source_fps: int, target_fps: float, seconds: int, expected: int) -> None:
    sampler = RateSampler(target_fps)
    kept = sum(sampler.accept(index / source_fps) for index in range(source_fps * seconds))
    assert kept == expected


def test_rate_sampler_restarts_after_a_gap_instead_of_bursting() -> None:
    sampler = RateSampler(10)
    assert sampler.accept(0.0)
    assert sampler.accept(5.0)  # 5 s stall: one frame, then the grid continues from there
    assert not sampler.accept(5.05)
    assert sampler.accept(5.1)


def _frames(count: int) -> list[SourceFrame]:
    return [SourceFrame(Image.new("L", (8, 8), index), index / 10) for index in range(count)]


def test_failing_source_is_reopened_with_backoff_until_it_delivers() -> None:
    attempts = []
    sleeps: list[float] = []

    def opener():
        attempts.append(1)
        if len(attempts) <= 2:
            raise OSError("connection refused")
        yield from _frames(3)

    stats = SourceStats()
    source = ResilientSource(opener, stats, Backoff(initial_s=1.0, jitter=0.0, max_attempts=5), sleep=sleeps.append)
    assert len(list(source)) == 3
    assert sleeps == [1.0, 2.0] and stats.reconnects == 2


def test_source_that_never_recovers_gives_up_after_bounded_attempts() -> None:
    sleeps: list[float] = []

    def opener():
        raise OSError("no route to host")

    backoff = Backoff(initial_s=1.0, max_s=3.0, jitter=0.0, max_attempts=5)
    with pytest.raises(SourceUnavailable, match="5 failures in a row"):
        list(ResilientSource(opener, SourceStats(), backoff, sleep=sleeps.append))
    assert sleeps == [1.0, 2.0, 3.0, 3.0]


def test_live_source_dropping_mid_stream_resumes_and_resets_the_failure_count() -> None:
    opened = []
    sleeps: list[float] = []

    def opener():
        opened.append(1)
        if len(opened) > 3:
            raise OSError("gone for good")
        yield from _frames(2)
        raise OSError("stream dropped")

    stats = SourceStats()
    backoff = Backoff(initial_s=1.0, jitter=0.0, max_attempts=3)
    source = ResilientSource(opener, stats, backoff, live=True, sleep=sleeps.append)
    received = []
    with pytest.raises(SourceUnavailable):
        received.extend(frame.pts for frame in source)
    assert len(received) == 6  # three connections of two frames, each failure count reset by a frame
    assert received == sorted(received)  # source time keeps increasing across reconnects
    assert sleeps == [1.0, 1.0, 1.0, 2.0]


def test_file_loops_when_asked(tmp_path: Path) -> None:
    def opener():
        yield from _frames(4)

    source = ResilientSource(opener, SourceStats(), loop=True)
    received = [frame for _, frame in zip(range(10), source, strict=False)]
    assert len(received) == 10


def test_corrupt_jpeg_in_a_frame_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    for index in range(4):
        Image.new("RGB", (36, 24), (index * 40, 0, 0)).save(tmp_path / f"{index:03d}.jpg", quality=95)
    good = (tmp_path / "002.jpg").read_bytes()
    (tmp_path / "002.jpg").write_bytes(good[: len(good) // 3])  # truncated mid-scan
    (tmp_path / "004.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    stats = SourceStats()
    frames = list(iter_folder(tmp_path, 10.0, stats))
    assert len(frames) == 3 and stats.corrupt == 2 and stats.decoded == 3
    assert [frame.pts for frame in frames] == pytest.approx([0.0, 0.1, 0.3])


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_frame_encodings_round_trip_through_the_scorers_decoder(encoding: str) -> None:
    frame = np.tile(np.arange(96, dtype=np.uint8), (64, 1))
    meta = VideoFrame(camera="cam", seq=0, event_time=0.0, width=96, height=64, encoding=encoding)
    decoded = decode_frame(meta, encode_frame(frame, encoding), height=64, width=96)
    tolerance = 0 if encoding == "raw" else 4
    assert decoded.shape == (64, 96) and np.abs(decoded.astype(int) - frame).max() <= tolerance


def test_bad_payloads_are_rejected_with_a_reason() -> None:
    meta = VideoFrame(camera="cam", seq=0, event_time=0.0, width=96, height=64, encoding="raw")
    with pytest.raises(ContractError, match="bytes"):
        decode_frame(meta, b"\x00" * 10, height=64, width=96)
    with pytest.raises(ContractError, match="JPEG"):
        decode_frame(meta.model_copy(update={"encoding": "jpeg"}), b"garbage", height=64, width=96)


def test_size_option_parses_width_by_height() -> None:
    import typer

    from pipeline.video_ingest import parse_size

    assert parse_size("96x64") == (96, 64)
    for bad in ("96", "0x64", "axb"):
        with pytest.raises(typer.BadParameter):
            parse_size(bad)
