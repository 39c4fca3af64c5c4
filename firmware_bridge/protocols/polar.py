"""Polar PMD (Polar Measurement Data) over BLE, sans-IO: H10 ECG and ACC, raw and delta-compressed frames.

Facts from polar-ble-sdk (BlePMDClient parseDeltaFramesAll, PmdDataFrame, EcgData, AccData,
technical_documentation/TimeSystemExplained.md) and bleakheart (core.py):
- service FB005C80-02E7-F387-1CAD-8ACD2D8DF0C8, control point ...5C81 (write/indicate), data ...5C82 (notify);
- a control request is [op, measurement type, (setting type, 1, u16/u8 value)...]: op 1 get settings,
  2 start, 3 stop; setting 0 sample rate, 1 resolution, 2 range; the reply starts F0 op type status;
- a data notification is [measurement type][u64 LE: time of the LAST sample, ns since 2000-01-01]
  [frame type, bit 7 = delta-compressed] + payload;
- ECG (measurement 0) raw frame type 0: int24 LE microvolts per sample; ACC (measurement 2) raw frame
  types 0/1/2: 3 channels of int8/int16/int24 LE milli-g;
- a compressed payload is one reference sample (each channel ceil(resolution / 8) bytes, LE, signed), then
  blocks of [delta bit width][sample count] + the deltas bit-packed LSB first, each added to the sample
  before it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

SERVICE = "fb005c80-02e7-f387-1cad-8acd2d8df0c8"
CONTROL_POINT = "fb005c81-02e7-f387-1cad-8acd2d8df0c8"
DATA = "fb005c82-02e7-f387-1cad-8acd2d8df0c8"
ECG, ACC = 0, 2
EPOCH_2000_NS = 946_684_800 * 10**9  # Polar time counts from 2000-01-01T00:00:00Z
OP_GET, OP_START, OP_STOP = 1, 2, 3
SAMPLE_RATE, RESOLUTION, RANGE = 0, 1, 2
RAW_ACC_BYTES = {0: 1, 1: 2, 2: 3}  # ACC raw frame type -> bytes per channel value
# measurement -> (channels, reference resolution) of compressed frames. ACC (3, 16) is what the SDK decodes its
# compressed ACC frames with; ECG (1, 24) follows its raw int24 samples and is not confirmed from the SDK.
COMPRESSED_RESOLUTION = {ECG: (1, 24), ACC: (3, 16)}


# control-point reply status codes (polar-ble-sdk PmdControlPointResponse; bleakheart's error_msgs)
STATUS_OK, STATUS_INVALID_MEASUREMENT_TYPE, STATUS_ALREADY_IN_STATE = 0, 2, 6
STATUS_INVALID_RESOLUTION, STATUS_INVALID_SAMPLE_RATE, STATUS_INVALID_RANGE = 7, 8, 9
STATUS_TEXT = ("success", "invalid op code", "invalid measurement type", "not supported", "invalid length",
               "invalid parameter", "already in state", "invalid resolution", "invalid sample rate", "invalid range",
               "invalid MTU", "invalid number of channels", "invalid state", "device in charger", "disk full")


def status_text(status: int) -> str:
    return f"{STATUS_TEXT[status] if status < len(STATUS_TEXT) else 'unknown error'} (status {status})"


class PmdError(ValueError):
    """A malformed notification (counted and dropped by the device layer) or an impossible request."""


def start_request(measurement: int, settings: dict[int, int]) -> bytes:
    """Control-point bytes that start a measurement, e.g. start_request(ECG, {SAMPLE_RATE: 130, RESOLUTION: 14})
    == bytes.fromhex('02 00 00 01 82 00 01 01 0e 00')."""
    out = bytes([OP_START, measurement])
    for setting, value in settings.items():
        out += bytes([setting, 1]) + struct.pack("<H", value)
    return out


def stop_request(measurement: int) -> bytes:
    return bytes([OP_STOP, measurement])


def _signed(values: np.ndarray, bits: int) -> np.ndarray:
    values = values.astype(np.int64)
    return np.where(values >= 1 << (bits - 1), values - (1 << bits), values)


def _le_ints(payload: bytes, width: int) -> np.ndarray:
    """Signed little-endian integers of `width` bytes."""
    raw = np.frombuffer(payload, dtype=np.uint8).reshape(-1, width).astype(np.int64)
    value = sum(raw[:, i] << (8 * i) for i in range(width))
    return _signed(value, 8 * width)


def decode_delta(payload: bytes, channels: int, resolution: int) -> np.ndarray:
    """Samples [N, channels] of a delta-compressed payload (see the module docstring)."""
    ref_width = math.ceil(resolution / 8)
    if len(payload) < channels * ref_width:
        raise PmdError("compressed frame shorter than its reference sample")
    ref = _le_ints(payload[: channels * ref_width], ref_width)
    rows, offset = [ref[None, :]], channels * ref_width
    last = ref  # the sample the next delta adds to (a block of 0 samples adds none)
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise PmdError("compressed frame ends inside a block header")
        width, count = payload[offset], payload[offset + 1]
        offset += 2
        nbytes = math.ceil(width * count * channels / 8)
        if width == 0 or width > 32 or offset + nbytes > len(payload):
            raise PmdError(f"bad delta block (width {width}, {count} samples, {len(payload) - offset} bytes left)")
        bits = np.unpackbits(np.frombuffer(payload[offset : offset + nbytes], dtype=np.uint8), bitorder="little")
        bits = bits[: width * count * channels].reshape(count * channels, width).astype(np.int64)
        deltas = _signed((bits << np.arange(width)).sum(axis=1), width).reshape(count, channels)
        if count:
            rows.append(last + np.cumsum(deltas, axis=0))
            last = rows[-1][-1]
        offset += nbytes
    return np.concatenate(rows)


def encode_delta(samples: np.ndarray, resolution: int, width: int, block: int = 32) -> bytes:
    """The inverse of decode_delta (for simulators and tests): samples [N, C] with deltas that fit `width` bits."""
    x = np.asarray(samples, dtype=np.int64)
    ref_width = math.ceil(resolution / 8)
    out = b"".join(int(v).to_bytes(ref_width, "little", signed=True) for v in x[0])
    deltas = np.diff(x, axis=0)
    if len(deltas) and (deltas.min() < -(1 << (width - 1)) or deltas.max() >= 1 << (width - 1)):
        raise PmdError(f"deltas do not fit {width} bits")
    for i in range(0, len(deltas), block):
        d = deltas[i : i + block]
        bits = ((d.reshape(-1, 1) & ((1 << width) - 1)) >> np.arange(width)) & 1
        out += bytes([width, len(d)]) + np.packbits(bits.astype(np.uint8).ravel(), bitorder="little").tobytes()
    return out


@dataclass
class PmdFrame:
    measurement: int  # ECG or ACC
    t_last_ns: int  # device time of the last sample, ns since 2000-01-01
    compressed: bool
    samples: np.ndarray  # [N, C]: ECG microvolts (C = 1), ACC milli-g (C = 3)

    @property
    def t_last_unix(self) -> float:
        return (self.t_last_ns + EPOCH_2000_NS) / 1e9

    def sample_times(self, rate_hz: float) -> np.ndarray:
        """Device times (ns since 2000) of every sample, from the last one's stamp and the sample rate."""
        n = len(self.samples)
        return self.t_last_ns - ((n - 1 - np.arange(n)) * 1e9 / rate_hz)


def parse_notification(data: bytes) -> PmdFrame:
    """One PMD data notification -> samples; raises PmdError for anything malformed (never for valid data)."""
    if len(data) < 10:
        raise PmdError(f"PMD notification of {len(data)} bytes; the header alone is 10")
    measurement, t_ns, frame_type = data[0], struct.unpack_from("<Q", data, 1)[0], data[9]
    compressed, kind, payload = bool(frame_type & 0x80), frame_type & 0x7F, bytes(data[10:])
    if measurement not in (ECG, ACC):
        raise PmdError(f"measurement type {measurement} is not decoded here (ECG {ECG}, ACC {ACC})")
    if compressed:
        channels, resolution = COMPRESSED_RESOLUTION[measurement]
        samples = decode_delta(payload, channels, resolution)
    elif measurement == ECG:
        if kind != 0 or len(payload) % 3:
            raise PmdError(f"ECG raw frame type {kind} with {len(payload)} bytes (type 0, 3 bytes a sample)")
        samples = _le_ints(payload, 3)[:, None]
    else:
        width = RAW_ACC_BYTES.get(kind)
        if width is None or len(payload) % (3 * width):
            raise PmdError(f"ACC raw frame type {kind} with {len(payload)} bytes")
        samples = _le_ints(payload, width).reshape(-1, 3)
    if not len(samples):
        raise PmdError(f"{'ECG' if measurement == ECG else 'ACC'} notification without samples")
    return PmdFrame(measurement, t_ns, compressed, samples)


def encode_notification(measurement: int, t_last_ns: int, samples: np.ndarray, compressed: bool = False,
                        frame_type: int | None = None, delta_width: int = 8) -> bytes:
    """A data notification as the device sends it (simulators and tests)."""
    x = np.asarray(samples, dtype=np.int64)
    if compressed:
        channels, resolution = COMPRESSED_RESOLUTION[measurement]
        payload, kind = encode_delta(x.reshape(-1, channels), resolution, delta_width), 0
    elif measurement == ECG:
        payload, kind = b"".join(int(v).to_bytes(3, "little", signed=True) for v in x.ravel()), 0
    else:
        kind = 1 if frame_type is None else frame_type
        payload = b"".join(int(v).to_bytes(RAW_ACC_BYTES[kind], "little", signed=True) for v in x.ravel())
    return bytes([measurement]) + struct.pack("<Q", t_last_ns) + bytes([kind | (0x80 if compressed else 0)]) + payload
