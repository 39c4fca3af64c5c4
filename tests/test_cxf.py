"""CXF frames for custom boards: CRC check value, round trips through any chunking, exact loss counting,
and corrupt input that is skipped and counted, never fatal."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.protocols.cxf import CxfParser, FrameError, crc16, crc16_ccitt, encode_frame


def test_crc_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1 == crc16(b"123456789")


def make_stream(rng: np.random.Generator, n_frames: int, dtype: str = "<i2", channels: int = 3, per_frame: int = 10,
                start: int = 0):
    frames, data = [], b""
    for k in range(n_frames):
        x = rng.integers(-3000, 3000, size=(per_frame, channels)).astype(dtype)
        first = (start + k * per_frame) % (1 << 32)
        frames.append((first, x))
        data += encode_frame(7, 2, first, 1_000_000 + k * per_frame * 1000, x, dtype)
    return frames, data


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from(["<i2", "<i4", "<f4"]), st.integers(1, 12), st.integers(1, 60), st.integers(1, 97), st.integers(0, 2**31))
def test_round_trip_through_any_chunking(dtype, channels, per_frame, chunk, seed):
    frames, data = make_stream(np.random.default_rng(seed), 8, dtype, channels, per_frame)
    parser = CxfParser()
    got = [f for i in range(0, len(data), chunk) for f in parser.feed(data[i : i + chunk])]
    assert [(f.device, f.modality, f.first_index) for f in got] == [(7, 2, first) for first, _ in frames]
    for f, (_, x) in zip(got, frames):
        assert f.samples.dtype == np.dtype(dtype) and (f.samples == x).all()
    c = parser.counters
    assert c.frames == 8 and c.crc_errors == c.bad_headers == c.bytes_skipped == c.repeats == 0 and not c.samples_lost


def test_a_lost_frame_is_counted_to_the_sample_and_index_wraps_are_not_losses():
    rng = np.random.default_rng(0)
    frames, data = make_stream(rng, 6, per_frame=10, start=(1 << 32) - 25)  # wraps within the stream
    size = len(data) // 6
    parser = CxfParser()
    got = parser.feed(data[: 2 * size] + data[3 * size :])  # frame 2 never arrives
    assert len(got) == 5 and parser.counters.samples_lost == {(7, 2): 10}
    assert parser.feed(data[size : 2 * size]) == [] and parser.counters.repeats == 1  # an old frame again
    _, fresh = make_stream(rng, 1, start=0)  # the board restarted at index 0
    assert len(parser.feed(fresh)) == 1 and parser.counters.restarts == 1


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(0, 2**31), st.sampled_from(["flip", "drop", "duplicate", "garbage"]))
def test_corrupt_bytes_are_skipped_and_counted(seed, fault):
    rng = np.random.default_rng(seed)
    frames, data = make_stream(rng, 20)
    size = len(data) // 20
    at = int(rng.integers(2 * size, 17 * size))
    buf = bytearray(data)
    if fault == "flip":
        buf[at] ^= 1 << int(rng.integers(0, 8))
    elif fault == "drop":
        del buf[at : at + int(rng.integers(1, 30))]
    elif fault == "duplicate":
        buf[at:at] = buf[at : at + int(rng.integers(1, 30))]
    else:
        buf[at:at] = rng.integers(0, 256, size=int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    parser = CxfParser()
    got = [f for i in range(0, len(buf), 50) for f in parser.feed(bytes(buf[i : i + 50]))]
    sent = {first: x for first, x in frames}
    assert all(f.first_index in sent and (f.samples == sent[f.first_index]).all() for f in got)
    assert len({f.first_index for f in got}) == len(got)  # a repeated frame is never delivered twice
    assert len(got) >= 17  # the damage costs at most the frames it touched
    c = parser.counters
    missing = 20 - len(got)
    assert c.samples_lost.get((7, 2), 0) == 10 * missing or missing == 0 and fault in ("duplicate", "garbage")
    if missing or fault != "duplicate":
        assert c.crc_errors + c.bad_headers + c.bytes_skipped > 0


def test_encoder_refuses_what_the_format_cannot_carry():
    with pytest.raises(FrameError):
        encode_frame(1, 1, 0, 0, np.zeros((0, 3)))
    with pytest.raises(FrameError):
        encode_frame(1, 1, 0, 0, np.zeros((256, 1)))
    with pytest.raises(FrameError):
        encode_frame(1, 1, 0, 0, np.zeros((10, 3)), "<f8")
    with pytest.raises(FrameError):
        encode_frame(1, 1, 0, 0, np.zeros((255, 9), dtype="<f4"))  # 9,180 bytes > 4,096


# ---- hostile bytes (issue 15) ---------------------------------------------------------------------------------
def test_a_payload_header_over_the_cap_is_refused_at_once():
    from firmware_bridge.protocols.cxf import HEADER, SYNC

    huge = HEADER.pack(SYNC, 1, 1, 1, 3, 0, 0, 255, 64, 255 * 64 * 4)  # 65,280 bytes announced
    good = encode_frame(1, 1, 0, 0, np.ones((5, 1), np.float32))
    parser = CxfParser()
    assert len(parser.feed(huge + good)) == 1 and parser.counters.bad_headers == 1


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(4, 30), st.sampled_from(["flip", "drop", "dup", "garbage", "frames"]), st.integers(0, 2**31))
def test_same_frames_and_counters_for_every_read_size(n_frames, fault, seed):
    from firmware_bridge.simulators.fuzz import cxf_stream, same_for_every_read_size

    assert same_for_every_read_size(CxfParser, cxf_stream(np.random.default_rng(seed), n_frames, fault))


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.binary(max_size=400), st.integers(1, 64))
def test_any_bytes_never_raise(data, chunk):
    parser = CxfParser()
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
    parser.flush()
    assert parser.counters.bytes_in == len(data)
