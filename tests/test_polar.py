"""Polar PMD: the SDK's start request, delta frames (a worked vector and round trips), raw ECG/ACC, the
2000-01-01 time base, and malformed notifications refused with PmdError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.protocols.polar import (
    ACC, ECG, RESOLUTION, SAMPLE_RATE, PmdError, decode_delta, encode_delta, encode_notification, parse_notification,
    start_request,
)


def test_h10_ecg_start_request_matches_the_documented_bytes():
    assert start_request(ECG, {SAMPLE_RATE: 130, RESOLUTION: 14}) == bytes.fromhex("02 00 00 01 82 00 01 01 0e 00")


def test_delta_frame_worked_example():
    # reference (10, -5, 0) at 8-bit resolution, then one block of 4-bit deltas (2, -1, 3), packed LSB first
    payload = bytes([10, 251, 0, 4, 1, 0xF2, 0x03])
    assert decode_delta(payload, 3, 8).tolist() == [[10, -5, 0], [12, -6, 3]]


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.integers(1, 3), st.integers(1, 200), st.integers(3, 16), st.integers(0, 2**31))
def test_delta_round_trip(channels, n, width, seed):
    rng = np.random.default_rng(seed)
    lim = 1 << (width - 1)
    deltas = rng.integers(-lim, lim, size=(n - 1, channels))
    x = np.concatenate([rng.integers(-30000, 30000, size=(1, channels)), deltas]).cumsum(axis=0)
    assert (decode_delta(encode_delta(x, 24, width), channels, 24) == x).all()


def test_raw_and_compressed_notifications_and_the_time_base():
    rng = np.random.default_rng(0)
    ecg = rng.integers(-2000, 2000, size=73)
    t = 820_000_000 * 10**9  # about 2025-12-26 in Polar time
    f = parse_notification(encode_notification(ECG, t, ecg))
    assert f.measurement == ECG and not f.compressed and f.samples[:, 0].tolist() == ecg.tolist()
    assert f.t_last_unix == pytest.approx(820_000_000 + 946_684_800)
    times = f.sample_times(130.0)
    assert times[-1] == t and times[0] == pytest.approx(t - 72 * 1e9 / 130)
    acc = rng.integers(-1000, 1000, size=(36, 3))
    for kind in (1, 2):
        assert (parse_notification(encode_notification(ACC, t, acc, frame_type=kind)).samples == acc).all()
    smooth = np.cumsum(rng.integers(-50, 50, size=(50, 3)), axis=0)
    f = parse_notification(encode_notification(ACC, t, smooth, compressed=True, delta_width=8))
    assert f.compressed and (f.samples == smooth).all()


@pytest.mark.parametrize("data", [
    b"\x00\x01",  # shorter than the header
    bytes([5]) + bytes(9),  # a measurement type not decoded here
    bytes([0]) + bytes(8) + bytes([0]) + b"\x01\x02",  # ECG payload not a multiple of 3 bytes
    bytes([2]) + bytes(8) + bytes([7]) + bytes(6),  # unknown ACC frame type
    bytes([2]) + bytes(8) + bytes([0x80]) + bytes([1, 0, 2, 0, 3, 0, 40, 9]),  # delta block wider than 32 bits
    bytes([2]) + bytes(8) + bytes([0x80]) + bytes([1, 0, 2, 0, 3, 0, 8, 9, 1]),  # block longer than the frame
])
def test_malformed_notifications_are_refused_clearly(data):
    with pytest.raises(PmdError):
        parse_notification(data)


# ---- hostile bytes (issue 15) ---------------------------------------------------------------------------------
def test_the_issues_repros_raise_only_pmd_error_or_parse():
    # a compressed frame whose first delta block has 0 samples, then another block: IndexError before
    f = parse_notification(bytes.fromhex("020000000000000000800000000000000100010100"))
    assert f.samples.tolist() == [[0, 0, 0], [0, 0, 0]]
    with pytest.raises(PmdError, match="without samples"):
        parse_notification(bytes([2]) + bytes(8) + b"\x01")  # an ACC frame of 0 samples


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(min_size=0, max_size=80), st.sampled_from([0, 2, 5]), st.sampled_from([0, 1, 2, 0x80, 0x81, 7]))
def test_any_notification_parses_or_raises_pmd_error(payload, measurement, frame_type):
    data = bytes([measurement]) + bytes(8) + bytes([frame_type]) + payload
    for notification in (data, payload):
        try:
            parse_notification(notification)
        except PmdError:
            pass


def test_a_device_fed_malformed_notifications_counts_them_and_goes_on():
    from firmware_bridge.devices import PolarDevice
    from firmware_bridge.protocols.polar import DATA

    dev = PolarDevice("h10", acc="acc", acc_rate=100)
    dev.connected()
    stamp = (10**12).to_bytes(8, "little")
    good = encode_notification(ACC, 10**12, np.zeros((10, 3)))
    for data in (good, bytes([2]) + stamp + b"\x01", bytes([2]) + stamp + b"\x81" + bytes(6) + b"\x01\x00\x01\x01\x00", b"\x02"):
        dev.feed(data, 1.0, DATA)
    assert dev.counters.bad_notifications == 2 and dev.counters.delivered["acc"] == 12
