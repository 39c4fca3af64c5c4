"""Bulk parsing speed of the sensor protocols (numpy, no torch): `python -m benchmarks.bridge_parse`.

Feeds 200,000 valid BITalino frames of random signal to a fresh parser in fixed-size chunks, as a serial
port or BLE stream would hand them over, and prints frames per second. The issue's aim: >= 200,000 frames/s.
"""

from __future__ import annotations

import time

import numpy as np

from firmware_bridge.protocols.bitalino import ANALOG_BITS, BitalinoParser, encode_frames


def bitalino_frames_per_s(channels: int, chunk: int, n: int = 200_000, seed: int = 0) -> float:
    """Frames per second a fresh parser takes `n` valid frames of random signal at, in `chunk`-byte pieces."""
    rng = np.random.default_rng(seed)
    analog = np.stack([rng.integers(0, 1 << ANALOG_BITS[c], size=n) for c in range(channels)], axis=1)
    data = encode_frames(np.arange(n) % 16, rng.integers(0, 2, size=(n, 4)), analog)
    parser = BitalinoParser(channels)
    t = time.perf_counter()
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
    parser.flush()
    dt = time.perf_counter() - t
    if parser.counters.frames != n or parser.counters.crc_errors:
        raise RuntimeError(f"parsed {parser.counters.frames} of {n} frames, {parser.counters.crc_errors} CRC errors")
    return n / dt


def main() -> int:
    for channels in (1, 6):
        for chunk in (4096, 65536):
            print(f"BITalino {channels} channel(s), {chunk:>6} B chunks: {bitalino_frames_per_s(channels, chunk):>12,.0f} frames/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
