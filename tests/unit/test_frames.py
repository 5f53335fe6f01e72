import io

import numpy as np
import pytest
from PIL import Image

from core.contracts import ContractError, VideoFrame
from operators.frames import FrameBuffer, decode_frame


def frame(seq: int, camera: str = "cam", encoding: str = "raw", size: tuple[int, int] = (4, 6)) -> VideoFrame:
    return VideoFrame(camera=camera, seq=seq, event_time=seq / 10, height=size[0], width=size[1], encoding=encoding)


def image(value: int) -> np.ndarray:
    return np.full((4, 6), value, dtype=np.uint8)


def test_stacks_hold_k_context_frames_and_the_current_one_last() -> None:
    buffer = FrameBuffer(context=2)
    assert buffer.add(frame(0), image(0), ref=10) is None
    assert buffer.add(frame(1), image(1), ref=11) is None
    stack = buffer.add(frame(2), image(2), ref=12)
    assert stack is not None and stack.frames.shape == (3, 4, 6) and stack.seq == 2
    assert stack.frames[:, 0, 0].tolist() == [0, 1, 2] and stack.oldest_ref == 10
    stack = buffer.add(frame(3), image(3), ref=13)
    assert stack is not None and stack.frames[:, 0, 0].tolist() == [1, 2, 3]
    assert buffer.oldest_ref("cam") == 12  # the next stack needs frames 2 and 3 only


def test_stale_frames_are_dropped_and_gaps_restart_the_context() -> None:
    buffer = FrameBuffer(context=1)
    buffer.add(frame(0), image(0))
    assert buffer.add(frame(1), image(1)) is not None
    assert buffer.add(frame(1), image(9)) is None and buffer.stale_frames == 1
    assert buffer.add(frame(5), image(5)) is None and buffer.context_resets == 1
    stack = buffer.add(frame(6), image(6))
    assert stack is not None and stack.frames[:, 0, 0].tolist() == [5, 6]


def test_cameras_are_independent() -> None:
    buffer = FrameBuffer(context=1)
    buffer.add(frame(0, "a"), image(0))
    assert buffer.add(frame(0, "b"), image(0)) is None
    assert buffer.add(frame(1, "a"), image(1)) is not None


def test_jpeg_is_decoded_to_gray_at_model_size() -> None:
    rgb = np.zeros((8, 12, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    payload = io.BytesIO()
    Image.fromarray(rgb).save(payload, format="JPEG")
    decoded = decode_frame(frame(0, encoding="jpeg", size=(8, 12)), payload.getvalue(), height=4, width=6)
    assert decoded.shape == (4, 6) and decoded.dtype == np.uint8
    assert 50 < decoded.mean() < 70  # luminance of pure red 200 is about 60


def test_corrupt_jpeg_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="corrupt JPEG"):
        decode_frame(frame(0, encoding="jpeg"), b"\xff\xd8\xff\xe0 definitely not a jpeg", height=4, width=6)


def test_raw_frame_of_the_wrong_length_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="expected 24"):
        decode_frame(frame(0), bytes(23), height=4, width=6)
    assert decode_frame(frame(0), bytes(range(24)), height=4, width=6)[1, 0] == 6


def _jpeg_claiming(height: int, width: int) -> bytes:
    """A small real JPEG whose start-of-frame header is rewritten to claim another size."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_a_jpeg_claiming_65000x65000_pixels_is_a_contract_error_not_an_allocation() -> None:
    bomb = _jpeg_claiming(65000, 65000)
    with pytest.raises(ContractError, match=r"corrupt JPEG: Image size .* exceeds limit"):
        decode_frame(frame(0, encoding="jpeg", size=(8, 8)), bomb, height=4, width=6)


def test_a_jpeg_of_another_size_than_its_header_declares_is_refused_before_decoding() -> None:
    claims_more = _jpeg_claiming(2000, 3000)
    with pytest.raises(ContractError, match="JPEG of 3000x2000 pixels, the frame header declares 8x8"):
        decode_frame(frame(0, encoding="jpeg", size=(8, 8)), claims_more, height=4, width=6)


def test_only_jpeg_is_taken_for_a_jpeg_frame() -> None:
    png = io.BytesIO()
    Image.fromarray(np.zeros((4, 6), dtype=np.uint8)).save(png, format="PNG")
    with pytest.raises(ContractError, match="corrupt JPEG"):
        decode_frame(frame(0, encoding="jpeg"), png.getvalue(), height=4, width=6)
