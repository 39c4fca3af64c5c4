"""Faulty byte streams and the ways of reading them, for the parsers' properties (tests/) and the fuzz run
(`python -m benchmarks.bridge_fuzz`).

A faulty stream is a valid stream of random frames with one fault a link can make: a flipped bit, 1-3
dropped or repeated bytes, inserted garbage, or whole frames dropped at frame boundaries. `read` feeds a
parser the same bytes cut into reads of a given size and returns everything it delivered with its final
counters, so two ways of reading can be compared for equality.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from firmware_bridge.protocols import bitalino, cxf

FAULTS = ("flip", "drop", "dup", "garbage", "frames")


@dataclasses.dataclass
class FaultyStream:
    data: bytes
    sent: list  # what was sent, one entry per frame (BITalino: analog rows; CXF: (first index, samples))
    frame_bytes: int  # bytes of one frame (BITalino), of the first frame (CXF)
    fault: str


def inject(rng: np.random.Generator, data: bytes, frame_bytes: int, fault: str) -> bytes:
    """data with one fault of the named kind at a random place."""
    b = bytearray(data)
    at = int(rng.integers(0, len(b)))
    if fault == "flip":
        b[at] ^= 1 << int(rng.integers(8))
    elif fault == "drop":
        del b[at : at + int(rng.integers(1, 4))]
    elif fault == "dup":
        n = int(rng.integers(1, 4))
        b[at:at] = b[at : at + n]
    elif fault == "garbage":
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif fault == "frames":
        frames = len(b) // frame_bytes
        first = int(rng.integers(1, max(frames - 1, 2)))
        del b[first * frame_bytes : (first + int(rng.integers(1, 16))) * frame_bytes]
    else:
        raise ValueError(f"fault {fault!r}; known: {', '.join(FAULTS)}")
    return bytes(b)


def bitalino_stream(rng: np.random.Generator, n_channels: int, n_frames: int, fault: str | None) -> FaultyStream:
    seq = np.arange(n_frames) % 16
    analog = np.stack([rng.integers(0, 1 << bitalino.ANALOG_BITS[c], n_frames) for c in range(n_channels)], axis=1)
    data = bitalino.encode_frames(seq, rng.integers(0, 2, (n_frames, 4)), analog)
    size = bitalino.frame_size(n_channels)
    return FaultyStream(inject(rng, data, size, fault) if fault else data, analog.tolist(), size, fault or "none")


def cxf_stream(rng: np.random.Generator, n_frames: int, fault: str | None, channels: int = 3,
               per_frame: int = 8) -> FaultyStream:
    sent, data = [], b""
    for k in range(n_frames):
        x = rng.integers(-3000, 3000, size=(per_frame, channels)).astype("<i2")
        sent.append((k * per_frame, x.tolist()))
        data += cxf.encode_frame(7, 2, k * per_frame, 1000 * k, x)
    size = len(data) // n_frames
    return FaultyStream(inject(rng, data, size, fault) if fault else data, sent, size, fault or "none")


def read(parser, data: bytes, chunk: int) -> tuple[list, dict]:
    """Feed `data` to a fresh parser in reads of `chunk` bytes, then end the stream: (everything delivered,
    in order, as plain lists; the final counters)."""
    out = []
    for i in range(0, len(data), max(chunk, 1)):
        out.append(parser.feed(data[i : i + chunk]))
    if isinstance(parser, bitalino.BitalinoParser):
        out.append(parser.flush())
        delivered = [row for f in out for row in np.concatenate([f.seq[:, None], f.lost_before[:, None],
                                                                 f.digital, f.analog], axis=1).tolist()]
    else:
        parser.flush()
        delivered = [(f.device, f.modality, f.first_index, f.t_us, f.samples.tolist()) for frames in out for f in frames]
    return delivered, dataclasses.asdict(parser.counters)


def chunkings(frame_bytes: int, data: bytes) -> tuple[int, ...]:
    """The read sizes the issue compares: whole, 64 bytes, one frame, one byte."""
    return (max(len(data), 1), 64, frame_bytes, 1)


def same_for_every_read_size(make_parser: Callable[[], object], stream: FaultyStream) -> bool:
    results = [read(make_parser(), stream.data, c) for c in chunkings(stream.frame_bytes, stream.data)]
    return all(r == results[0] for r in results[1:])
