"""BITalino protocol: against the byte-by-byte algorithms of the vendor's Python API (re-stated here as the
oracle), round trips for every channel count, and corrupt, truncated or garbage input that never raises."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.protocols.bitalino import (
    BitalinoParser, ProtocolError, cmd_sampling_rate, cmd_start, crc4, decode_frames, encode_frames, fitting_channels,
    frame_size,
)

RESYNC_LOSS_BOUND = 6  # frames a single fault may cost


def vendor_crc(frame: bytes) -> int:
    """The CRC loop of the vendor's read(): MSB first over every byte, CRC nibble zeroed, x^4 + x + 1."""
    data = list(frame)
    data[-1] &= 0xF0
    x = 0
    for byte in data:
        for bit in range(7, -1, -1):
            x <<= 1
            if x & 0x10:
                x ^= 0x03
            x ^= (byte >> bit) & 1
    return x & 0x0F


def vendor_decode(frame: bytes, n: int) -> tuple[int, list[int], list[int]]:
    """The field extraction of the vendor's read(), byte by byte from the end of the frame."""
    d = list(frame)
    seq = d[-1] >> 4
    digital = [(d[-2] >> b) & 1 for b in (7, 6, 5, 4)]
    a = [((d[-2] & 0x0F) << 6) | (d[-3] >> 2)]
    if n > 1:
        a.append(((d[-3] & 0x03) << 8) | d[-4])
    if n > 2:
        a.append((d[-5] << 2) | (d[-6] >> 6))
    if n > 3:
        a.append(((d[-6] & 0x3F) << 4) | (d[-7] >> 4))
    if n > 4:
        a.append(((d[-7] & 0x0F) << 2) | (d[-8] >> 6))
    if n > 5:
        a.append(d[-8] & 0x3F)
    return seq, digital, a


def random_frames(rng: np.random.Generator, n_frames: int, n_channels: int, start_seq: int = 0):
    seq = (start_seq + np.arange(n_frames)) % 16
    digital = rng.integers(0, 2, size=(n_frames, 4))
    widths = [10, 10, 10, 10, 6, 6][:n_channels]
    analog = np.stack([rng.integers(0, 1 << w, size=n_frames) for w in widths], axis=1)
    return seq, digital, analog, encode_frames(seq, digital, analog)


def test_frame_sizes_and_commands():
    assert [frame_size(n) for n in range(1, 7)] == [3, 4, 6, 7, 8, 8]
    assert cmd_sampling_rate(1000) == b"\xc3" and cmd_sampling_rate(1) == b"\x03"
    assert cmd_start((0, 1, 2, 3, 4, 5)) == b"\xfd" and cmd_start((0,)) == b"\x05"
    assert cmd_start((1, 3), simulated=True) == bytes([(0b1010 << 2) | 0x02])
    for bad in (lambda: cmd_sampling_rate(500), lambda: cmd_start(()), lambda: cmd_start((6,)), lambda: frame_size(7)):
        with pytest.raises(ProtocolError):
            bad()


@pytest.mark.parametrize("n_channels", range(1, 7))
def test_encoding_matches_the_vendor_decoder_and_crc(n_channels):
    rng = np.random.default_rng(n_channels)
    seq, digital, analog, data = random_frames(rng, 200, n_channels, start_seq=5)
    size = frame_size(n_channels)
    for i in range(200):
        frame = data[i * size : (i + 1) * size]
        assert vendor_crc(frame) == frame[-1] & 0x0F
        s, d, a = vendor_decode(frame, n_channels)
        assert s == seq[i] and d == list(digital[i]) and a == list(analog[i])
    frames = np.frombuffer(data, dtype=np.uint8).reshape(200, size)
    # the vectorised CRC agrees with the vendor loop on random (mostly invalid) frames too
    junk = rng.integers(0, 256, size=(300, size), dtype=np.uint8)
    assert list(crc4(junk)) == [vendor_crc(bytes(f)) for f in junk]
    s, d, a = decode_frames(frames, n_channels)
    assert (s == seq).all() and (d == digital).all() and (a == analog).all()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(1, 120), st.lists(st.integers(1, 40), min_size=1, max_size=30), st.integers(0, 2**31))
def test_any_chunking_gives_every_frame_back(n_channels, n_frames, cuts, seed):
    seq, _, analog, data = random_frames(np.random.default_rng(seed), n_frames, n_channels)
    parser = BitalinoParser(n_channels)
    got, pos, i = [], 0, 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        got.append(parser.feed(data[pos : pos + step]))
        pos, i = pos + step, i + 1
    got.append(parser.flush())
    assert np.concatenate([g.analog for g in got]).tolist() == analog.tolist()
    c = parser.counters
    assert c.frames == n_frames and c.crc_errors == c.sequence_errors == c.frames_lost == c.resyncs == 0


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(0, 2**31), st.sampled_from(["flip", "drop", "duplicate", "garbage"]))
def test_corrupt_input_resyncs_and_is_counted_never_raises(n_channels, seed, fault):
    rng = np.random.default_rng(seed)
    n_frames = 60
    seq, _, analog, data = random_frames(rng, n_frames, n_channels)
    size = frame_size(n_channels)
    at = int(rng.integers(5, n_frames - 10)) * size + int(rng.integers(0, size))
    buf = bytearray(data)
    if fault == "flip":
        buf[at] ^= 1 << int(rng.integers(0, 8))
    elif fault == "drop":
        del buf[at : at + int(rng.integers(1, size))]
    elif fault == "duplicate":
        buf[at:at] = buf[at : at + int(rng.integers(1, size))]
    else:
        buf[at:at] = rng.integers(0, 256, size=int(rng.integers(1, 50)), dtype=np.uint8).tobytes()
    parser = BitalinoParser(n_channels)
    out = [parser.feed(bytes(buf[i : i + 17])) for i in range(0, len(buf), 17)] + [parser.flush()]
    got = np.concatenate([o.analog for o in out])
    c = parser.counters
    # every delivered frame is a real one, in order; the frames around the fault are lost and counted
    rows = {tuple(r) for r in analog.tolist()}
    assert all(tuple(r) in rows for r in got.tolist())
    assert c.crc_errors + c.sequence_errors >= 1 and c.resyncs >= 1
    assert n_frames - len(got) <= RESYNC_LOSS_BOUND
    assert c.frames_lost >= n_frames - len(got) - 15  # sequence numbers wrap at 16: a loss of 16 looks like 0


def test_pure_garbage_is_skipped_and_counted():
    parser = BitalinoParser(6)
    rng = np.random.default_rng(1)
    for _ in range(20):
        parser.feed(rng.integers(0, 256, size=64, dtype=np.uint8).tobytes())
    c = parser.counters
    assert c.bytes_in == 1280 and c.bytes_skipped > 1000
    # then a clean stream: it locks on and decodes
    _, _, analog, data = random_frames(rng, 40, 6)
    got = parser.feed(data)
    first = analog.tolist().index(got.analog[0].tolist())
    assert len(got) >= 35 and got.analog.tolist() == analog[first : first + len(got)].tolist()


# ---- hostile bytes (issue 15): read-size invariance, exact gaps, linear work, diagnosis -------------------------
from firmware_bridge.protocols import bitalino as bitalino_module  # noqa: E402
from firmware_bridge.simulators.fuzz import FAULTS, bitalino_stream, same_for_every_read_size  # noqa: E402


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(20, 90), st.sampled_from(FAULTS), st.integers(0, 2**31))
def test_same_frames_and_counters_for_whole_64_byte_one_frame_and_one_byte_reads(n_channels, n_frames, fault, seed):
    stream = bitalino_stream(np.random.default_rng(seed), n_channels, n_frames, fault)
    assert same_for_every_read_size(lambda: BitalinoParser(n_channels, 0), stream)
    # and nothing delivered was never sent (a splice would be)
    parser = BitalinoParser(n_channels, 0)
    got = np.concatenate([parser.feed(stream.data).analog, parser.flush().analog])
    sent = {tuple(r) for r in stream.sent}
    assert all(tuple(r) in sent for r in got.tolist())


def test_the_issues_read_size_repro_gives_the_same_values():
    data = bytes.fromhex("2c0c0e2404100427dc033958034d340e5e7c036f9c037e")
    for chunk in (len(data), 3, 1):
        parser = BitalinoParser(1)
        out = [parser.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)] + [parser.flush()]
        assert np.concatenate([o.analog for o in out])[:, 0].tolist() == [779, 247, 214, 909, 223, 231]


@pytest.mark.parametrize("n_channels", [1, 3, 6])
@pytest.mark.parametrize("gap", range(1, 16))
def test_every_gap_of_1_to_15_frames_is_counted_exactly(n_channels, gap):
    rng = np.random.default_rng(gap)
    _, _, analog, data = random_frames(rng, 100, n_channels)
    size = frame_size(n_channels)
    cut = data[: 40 * size] + data[(40 + gap) * size :]
    parser = BitalinoParser(n_channels, first_seq=0)
    got = [parser.feed(cut[i : i + 50]) for i in range(0, len(cut), 50)] + [parser.flush()]
    delivered = sum(len(g) for g in got)
    assert delivered == 100 - gap and parser.counters.frames_lost == gap  # sent = delivered + lost
    assert parser.counters.frames_lost_at_least == 0


def test_garbage_costs_linear_work(monkeypatch):
    """Counted work, not wall time: every byte of garbage is looked at a bounded number of times."""
    seen = []
    checks = bitalino_module._window_checks
    monkeypatch.setattr(bitalino_module, "_window_checks", lambda buf, length: seen.append(len(buf)) or checks(buf, length))
    rng = np.random.default_rng(0)
    parser = BitalinoParser(6)
    data = rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    for i in range(0, len(data), 4096):
        parser.feed(data[i : i + 4096])
    assert sum(seen) <= 1.1 * len(data)  # each read looks at its bytes and a frame run's worth kept from before
    assert parser.counters.bytes_skipped >= len(data) - 4096


def test_a_stream_of_another_channel_count_is_diagnosed_within_4_kb():
    rng = np.random.default_rng(3)
    _, _, _, data = random_frames(rng, 2000, 3)  # 3 channels, 6-byte frames, read as 6 channels
    parser = BitalinoParser(6)
    for i in range(0, len(data), 600):  # 0.1 s of 1 kHz data a read
        assert len(parser.feed(data[i : i + 600])) == 0
        if parser.diagnosis:
            break
    assert i + 600 <= 4800 and parser.counters.diagnoses == 1
    assert parser.diagnosis.startswith("no valid BITalino frames for 6 channels in 4.")
    assert parser.diagnosis.endswith("the byte pattern fits 3 channels")
    assert fitting_channels(data[:4096]) == [3] and fitting_channels(rng.bytes(4096)) == []


def test_bytes_a_link_repeats_are_not_taken_for_a_gap_of_15():
    """1 channel (3-byte frames): repeating 3 bytes from the second byte of a frame leaves, right after it, a
    window of the next frame's head and this frame's tail, which carries this frame's sequence number and passes
    its CRC one time in 16: it must be dropped as a repeat, not delivered after a 'gap of 15' (the ledger would
    be 16 off). Whole repeated frames likewise."""
    rng = np.random.default_rng(7)
    _, _, analog, data = random_frames(rng, 400, 1)
    cases = 0
    for f in range(5, 390):
        at = 3 * f
        window = data[at + 3 : at + 4] + data[at + 1 : at + 3]
        for faulty in (data[: at + 1] + data[at + 1 : at + 4] + data[at + 1 :], data[: at + 3] + data[at : at + 3] + data[at + 3 :]):
            if faulty[at + 3 : at + 6] != window and faulty[at + 3 : at + 6] != data[at : at + 3]:
                continue
            if faulty[at + 3 : at + 6] == window and crc4(np.frombuffer(window, np.uint8).reshape(1, 3))[0] != window[-1] & 0x0F:
                continue
            cases += 1
            parser = BitalinoParser(1, first_seq=0)
            got = np.concatenate([parser.feed(faulty).analog, parser.flush().analog])
            assert len(got) + parser.counters.frames_lost == 400
            assert {tuple(r) for r in got.tolist()} <= {tuple(r) for r in analog.tolist()}
    assert cases >= 20
