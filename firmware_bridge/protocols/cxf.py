"""CXF, the project's own frame format for custom sensor boards (serial, or BLE through the Nordic UART
service), sans-IO. Any ModalitySpec can stream over it; the layout is documented in
firmware_bridge/FRAME_FORMAT.md and `encode_frame` is the reference a firmware mirrors.

A frame carries one block of samples of one modality of one device, the index of its first sample (so
lost samples are counted exactly, not guessed from frame counts) and the device's timestamp of that first
sample (for the clock model). Bad bytes never raise: the parser hunts for the next sync word whose header
is sane and whose CRC-16 matches, counting what it skipped.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

import numpy as np

SYNC = b"\xc5\xed"
VERSION = 1
HEADER = struct.Struct("<2sBBBBIQBBH")  # sync, version, device, modality, dtype, first index, t_us, C, N, payload
DTYPES = {1: np.dtype("<i2"), 2: np.dtype("<i4"), 3: np.dtype("<f4")}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
MAX_PAYLOAD = 4096
RECENT_FRAMES = 256  # frame starts remembered per stream to tell a repeated frame from a restarted board


class FrameError(ValueError):
    """A frame cannot be encoded as asked (too many samples, unknown type); never raised for bad input bytes."""


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor); check("123456789") = 0x29B1."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


_TABLE = [crc16_ccitt(bytes([i]), 0) for i in range(256)]


def crc16(data: bytes) -> int:
    """The same CRC, table-driven (what the parser uses)."""
    crc = 0xFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def encode_frame(device: int, modality: int, first_index: int, t_us: int, samples: np.ndarray,
                 dtype: str | np.dtype = "<i2") -> bytes:
    """One frame: samples [N, C] (N <= 255, C <= 255) of one modality, the first at device time t_us."""
    dt = np.dtype(dtype).newbyteorder("<")
    if dt not in DTYPE_CODES:
        raise FrameError(f"sample type {dt} not in {[str(d) for d in DTYPES.values()]}")
    x = np.asarray(samples)
    if x.ndim != 2 or not (1 <= x.shape[0] <= 255 and 1 <= x.shape[1] <= 255):
        raise FrameError(f"samples must be [N, C] with 1 <= N, C <= 255, got {x.shape}")
    payload = x.astype(dt).tobytes()
    if len(payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}; send fewer samples per frame")
    head = HEADER.pack(SYNC, VERSION, device, modality, DTYPE_CODES[dt], first_index & 0xFFFFFFFF, t_us,
                       x.shape[1], x.shape[0], len(payload))
    body = head[2:] + payload
    return head + payload + struct.pack("<H", crc16(body))


def _header_ok(version: int, code: int, channels: int, samples: int, payload: int) -> bool:
    """A header a frame can have. The payload cap is checked here, at once: a header announcing more would
    otherwise hold back every frame behind it until that many bytes had arrived."""
    return (version == VERSION and code in DTYPES and channels > 0 and samples > 0 and payload <= MAX_PAYLOAD
            and payload == samples * channels * DTYPES[code].itemsize)


@dataclass
class Frame:
    device: int
    modality: int
    first_index: int  # index of the first sample in this stream (u32, wraps)
    t_us: int  # device time of the first sample, microseconds
    samples: np.ndarray  # [N, C] as sent (int or float); scaling to physical units is the device layer's


@dataclass
class CxfCounters:
    bytes_in: int = 0
    frames: int = 0
    crc_errors: int = 0
    bad_headers: int = 0
    bytes_skipped: int = 0
    samples_lost: dict = field(default_factory=dict)  # (device, modality) -> samples missing by index
    repeats: int = 0  # frames whose samples had already been delivered, dropped
    restarts: int = 0  # a stream's sample index jumped far back (the board restarted)


class CxfParser:
    """Bytes in, frames out (see the module docstring)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._next_index: dict[tuple[int, int], int] = {}
        self._recent: dict[tuple[int, int], deque] = {}
        self.counters = CxfCounters()

    def feed(self, data: bytes) -> list[Frame]:
        self.counters.bytes_in += len(data)
        self._buf += data
        out = []
        while True:
            at = self._buf.find(SYNC)
            if at < 0:
                keep = 1 if self._buf.endswith(SYNC[:1]) else 0
                self._skip(len(self._buf) - keep)
                break
            if at:
                self._skip(at)
            if len(self._buf) < HEADER.size:
                break
            _, version, device, modality, code, first, t_us, c, n, plen = HEADER.unpack_from(self._buf)
            if not _header_ok(version, code, c, n, plen):
                self.counters.bad_headers += 1
                self._skip(1)  # not a frame start after all: look for the next sync word
                continue
            total = HEADER.size + plen + 2
            if len(self._buf) < total:
                break
            body = bytes(self._buf[2 : total - 2])
            if crc16(body) != struct.unpack_from("<H", self._buf, total - 2)[0]:
                self.counters.crc_errors += 1
                self._skip(1)
                continue
            samples = np.frombuffer(body, dtype=DTYPES[code], offset=HEADER.size - 2).reshape(n, c)
            del self._buf[:total]
            if self._count(device, modality, first, n):
                out.append(Frame(device, modality, first, t_us, samples.copy()))
        return out

    def flush(self) -> int | None:
        """End of stream: drop what is left. Returns the samples of a frame cut short (from its header, when
        the header arrived whole and checks out), 0 when nothing was left, None when a cut frame's size is
        unknown (its header was cut too)."""
        cut: int | None = 0
        if self._buf.startswith(SYNC):
            cut = None
            if len(self._buf) >= HEADER.size:
                _, version, _, _, code, _, _, c, n, plen = HEADER.unpack_from(self._buf)
                if _header_ok(version, code, c, n, plen):
                    cut = n
        self._skip(len(self._buf))
        return cut

    def _skip(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.counters.bytes_skipped += n

    def _count(self, device: int, modality: int, first: int, n: int) -> bool:
        """Account for a frame; False for a repeat of a frame already delivered (dropped, counted)."""
        key = (device, modality)
        recent = self._recent.setdefault(key, deque(maxlen=RECENT_FRAMES))
        expected = self._next_index.get(key)
        if expected is not None:
            gap = (first - expected) % (1 << 32)
            if gap >= 1 << 31:  # behind the stream: a frame we had (repeated by a link), else a restarted board
                if first in recent:
                    self.counters.repeats += 1
                    return False
                self.counters.restarts += 1
            elif gap:
                self.counters.samples_lost[key] = self.counters.samples_lost.get(key, 0) + gap
        self.counters.frames += 1
        recent.append(first)
        self._next_index[key] = (first + n) % (1 << 32)
        return True
