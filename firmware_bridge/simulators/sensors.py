"""Sensor models, sans-IO: what a BITalino, a Polar H10 or a CXF board would send, byte for byte.

Each model takes the commands a host writes (`command`), and `produce(now)` returns the bytes it would
have sent since the last call (frames for every sample due by `now` on its own, possibly drifting,
clock). It counts what it sent per stream (`sent`), so a test or the soak benchmark can check the
bridge's accounting exactly: sent = delivered + counted lost. Signals come from `SignalSource`s
replaying real recordings (`firmware_bridge.simulators.signals`).

`Faults` corrupts a byte stream on demand (flipped bits, dropped and duplicated bytes), seeded, with
every injected fault counted. The I/O around the models (a pty, the bleak backend) lives in pty.py and
ble.py.
"""

from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.protocols import bitalino, cxf, polar
from firmware_bridge.simulators.signals import SignalSource


@dataclass
class Faults:
    """Per-chunk probabilities of each byte fault, applied to the bytes a model produced."""

    flip: float = 0.0  # one bit flipped
    drop: float = 0.0  # 1-3 bytes removed
    dup: float = 0.0  # 1-3 bytes repeated
    seed: int = 0
    counts: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def apply(self, data: bytes) -> bytes:
        if not data or not (self.flip or self.drop or self.dup):
            return data
        b = bytearray(data)
        r = self._rng
        if r.random() < self.flip:
            i = int(r.integers(len(b)))
            b[i] ^= 1 << int(r.integers(8))
            self.counts["flip"] += 1
        if r.random() < self.drop and len(b) > 3:
            i, n = int(r.integers(len(b) - 3)), int(r.integers(1, 4))
            del b[i:i + n]
            self.counts["drop"] += 1
        if r.random() < self.dup:
            i, n = int(r.integers(len(b))), int(r.integers(1, 4))
            b[i:i] = b[i:i + n]
            self.counts["dup"] += 1
        return bytes(b)


class DeviceClock:
    """A sensor's crystal: device time = (host time - start) * (1 + drift) + offset, plus optional jumps."""

    def __init__(self, drift_ppm: float = 0.0, offset_s: float = 0.0) -> None:
        self.drift = drift_ppm * 1e-6
        self.offset = offset_s

    def at(self, host_elapsed: float) -> float:
        return host_elapsed * (1 + self.drift) + self.offset


class SensorModel:
    """Base: streaming state, a device clock, and the count of samples sent per stream."""

    def __init__(self, clock: DeviceClock | None = None) -> None:
        self.clock = clock or DeviceClock()
        self.sent: Counter = Counter()
        self.streaming = False
        self._host_start = 0.0
        self._t_start = 0.0  # device time the current stream started at

    def power_on(self, now: float) -> None:
        """(Re)booted: not streaming until the host starts it."""
        self.streaming = False
        self._host_start = now

    def device_time(self, now: float) -> float:
        return self.clock.at(now - self._host_start)

    def command(self, data: bytes, now: float, target: str | None = None) -> bytes:
        """Bytes written by the host; returns the reply (if any) the device sends back."""
        return b""

    def produce(self, now: float) -> list[bytes]:
        """The frames (or notifications) due by `now`, in order."""
        return []

    def unsend(self, n_bytes: int) -> None:
        """The last n_bytes produced never left the device (link cut): take their samples off `sent`."""


class BitalinoModel(SensorModel):
    """BITalino (r)evolution: single-byte commands; frames for the analog inputs the start command chose."""

    VERSION = b"BITalino_v5.1\n"

    def __init__(self, sources: dict[int, SignalSource], clock: DeviceClock | None = None) -> None:
        super().__init__(clock)
        self.sources = sources  # analog input (1..6) -> ADC codes
        self.rate = 1000
        self.inputs: tuple[int, ...] = ()
        self.frame_len = 0
        self._emitted = 0
        self._seq = 0

    def command(self, data: bytes, now: float, target: str | None = None) -> bytes:
        reply = b""
        for c in data:
            if c == 0x00:
                self.streaming = False
            elif c == 0x07 and not self.streaming:
                reply += self.VERSION
            elif c & 0x3F == 0x03 and not self.streaming:
                self.rate = {v: k for k, v in bitalino.RATES.items()}[c >> 6]
            elif c & 0x03 in (1, 2) and not self.streaming:
                mask = c >> 2
                self.inputs = tuple(i + 1 for i in range(6) if mask >> i & 1)
                self.frame_len = bitalino.frame_size(len(self.inputs))
                self.streaming, self._seq, self._emitted = True, 0, 0
                self._t_start = self.device_time(now)
        return reply

    def produce(self, now: float) -> list[bytes]:
        if not self.streaming:
            return []
        due = int((self.device_time(now) - self._t_start) * self.rate) - self._emitted
        if due <= 0:
            return []
        analog = np.zeros((due, len(self.inputs)), np.int64)
        for j, a in enumerate(self.inputs):
            src = self.sources.get(a)
            if src is not None:
                bits = bitalino.ANALOG_BITS[a - 1]
                analog[:, j] = np.clip(np.rint(src.take(due, self.rate)[:, 0]), 0, 2**bits - 1)
        seq = (self._seq + np.arange(due)) % 16
        self._seq = int(seq[-1] + 1) % 16
        self._emitted += due
        for a in self.inputs:
            self.sent[f"A{a}"] += due
        return [bitalino.encode_frames(seq, np.zeros((due, 4), np.int64), analog)]

    def unsend(self, n_bytes: int) -> None:
        if self.frame_len:
            for a in self.inputs:
                self.sent[f"A{a}"] -= n_bytes // self.frame_len  # a partly sent frame counts as sent


class PolarModel(SensorModel):
    """Polar H10 PMD: start/stop on the control point (answered by indication), ACC notifications in milli-g."""

    def __init__(self, acc: SignalSource, clock: DeviceClock | None = None, per_notification: int = 36,
                 epoch_ns: int = 880_000_000 * 10**9) -> None:
        super().__init__(clock)
        self.acc = acc
        self.rate = 100
        self.per_notification = per_notification
        self.epoch_ns = epoch_ns  # device time 0 in ns since 2000-01-01 (the strap's clock is set by the phone)
        self._emitted = 0
        self.jump_ns = 0  # added to stamps from now on (a backward jump when negative)

    def command(self, data: bytes, now: float, target: str | None = None) -> bytes:
        data = bytes(data)
        if target != polar.CONTROL_POINT or len(data) < 2:
            return b""
        op, meas = data[0], data[1]
        if op == polar.OP_START:
            if meas != polar.ACC:
                return bytes([0xF0, op, meas, 0x01, 0x00])  # not supported here
            if len(data) >= 6 and data[2] == 0:
                self.rate = struct.unpack_from("<H", data, 4)[0]
            self.streaming, self._emitted = True, 0
            self._t_start = self.device_time(now)
            return bytes([0xF0, op, meas, 0x00, 0x00])
        if op == polar.OP_STOP:
            self.streaming = False
            return bytes([0xF0, op, meas, 0x00, 0x00])
        return bytes([0xF0, op, meas, 0x02, 0x00])

    def produce(self, now: float) -> list[bytes]:
        if not self.streaming:
            return []
        out = []
        total = int((self.device_time(now) - self._t_start) * self.rate)
        while total - self._emitted >= self.per_notification:
            n = self.per_notification
            x = np.rint(self.acc.take(n, self.rate) * 1000).astype(np.int64)  # g -> milli-g
            t_last = self._t_start + (self._emitted + n - 1) / self.rate
            stamp = self.epoch_ns + int(round(t_last * 1e9)) + self.jump_ns
            out.append(polar.encode_notification(polar.ACC, stamp, np.clip(x, -32768, 32767), frame_type=1))
            self._emitted += n
            self.sent["acc"] += n
        return out


class CxfModel(SensorModel):
    """A custom board: streams of any modality as CXF frames (float32), each with its modality id."""

    def __init__(self, streams: dict[int, tuple[SignalSource, float]], device_id: int = 1,
                 clock: DeviceClock | None = None, max_samples: int = 32, frame_s: float = 0.05) -> None:
        super().__init__(clock)
        self.streams = streams  # modality id -> (source, rate)
        self.device_id = device_id
        self.max_samples, self.frame_s = max_samples, frame_s
        self.streaming = True  # boards stream from power on; the host just listens
        self._index = {m: 0 for m in streams}
        self._frames: list[tuple[int, int]] = []  # (modality id, samples) of frames produced, newest last

    def power_on(self, now: float) -> None:
        super().power_on(now)
        self.streaming = True

    def produce(self, now: float) -> list[bytes]:
        if not self.streaming:
            return []
        t = self.device_time(now)
        out = []
        for mid, (src, rate) in self.streams.items():
            due = int(t * rate) - self._index[mid]
            # a frame every frame_s of samples (at least one sample), never more than max_samples
            min_n = max(1, int(rate * self.frame_s))
            while due >= min_n:
                n = min(due, self.max_samples)
                x = src.take(n, rate).astype(np.float32)
                first = self._index[mid]
                out.append(cxf.encode_frame(self.device_id, mid, first, int(round(first / rate * 1e6)), x, "<f4"))
                self._frames.append((mid, n))
                self._index[mid] += n
                self.sent[mid] += n
                due -= n
        del self._frames[:-4096]
        return out

    def unsend(self, n_bytes: int) -> None:
        # walk back over the newest frames: only frames that did not reach the host at all are unsent
        while self._frames and n_bytes > 0:
            mid, n = self._frames[-1]
            size = cxf.HEADER.size + n * 4 * self.streams[mid][0].channels + 2
            if n_bytes < size:
                break
            self._frames.pop()
            self.sent[mid] -= n
            n_bytes -= size


def bitalino_adc_emg(mv: np.ndarray, bits: int = 10) -> np.ndarray:
    """Inverse of the vendor's EMG transfer function (mV -> ADC)."""
    return (np.asarray(mv) / 1000 * 1009 / 3.3 + 0.5) * 2**bits


def bitalino_adc_eda(us: np.ndarray, bits: int = 10) -> np.ndarray:
    """Inverse of the EDA transfer function (uS -> ADC)."""
    return np.asarray(us) * 0.132 / 3.3 * 2**bits


__all__ = ["Faults", "DeviceClock", "SensorModel", "BitalinoModel", "PolarModel", "CxfModel",
           "bitalino_adc_emg", "bitalino_adc_eda"]
