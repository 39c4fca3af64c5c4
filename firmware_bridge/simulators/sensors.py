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
    """BITalino (r)evolution: single-byte commands; frames for the analog inputs the start command chose.

    Commands as the vendor's API (revolution-python-api, bitalino.py) sends them: version 0x07 (idle), state
    0x0B (idle; a 16-byte reply: A1..A6 and the battery ADC as u16 LE, the battery threshold, then I1 I2 O1 O2
    in bits 7..4 and a CRC4 over the 16 bytes), sampling rate `code << 6 | 0x03`, start `mask << 2 | 0x01`
    (live) or `| 0x02` (simulated), battery threshold `value << 2` (idle; so 0x00 sets threshold 0 when idle
    and stops when live), trigger `0xB3 | O1 << 2 | O2 << 3` (idle or live; the outputs appear in the
    frames' digital bits), PWM 0xA3 followed by its value byte (0-255), which is a value, never a command.
    Inferred, not from the vendor's docs: bytes the firmware has no use for in the current state (a start
    while live, a version request while live) are ignored; the battery ADC reads a fixed 700 and the digital
    inputs I1, I2 read 0.
    """

    VERSION = b"BITalino_v5.1\n"
    BATTERY_ADC = 700

    def __init__(self, sources: dict[int, SignalSource], clock: DeviceClock | None = None,
                 fixed_inputs: tuple[int, ...] | None = None) -> None:
        """fixed_inputs: a fault: stream these analog inputs whatever the start command asks (a host configured
        for another channel count than the board's)."""
        super().__init__(clock)
        self.sources = sources  # analog input (1..6) -> ADC codes
        self.fixed_inputs = fixed_inputs
        self.rate = 1000
        self.inputs: tuple[int, ...] = ()
        self.frame_len = 0
        self.outputs = (0, 0)  # digital outputs O1, O2 (trigger)
        self.pwm = 0
        self.battery_threshold = 0
        self._last_adc = [0] * 6  # the last ADC code sent per analog input (what state() reads)
        self._pwm_value_next = False  # the byte after 0xA3 is PWM's value
        self._emitted = 0
        self._seq = 0

    def command(self, data: bytes, now: float, target: str | None = None) -> bytes:
        reply = b""
        for c in data:
            if self._pwm_value_next:
                self.pwm, self._pwm_value_next = c, False
            elif c == 0xA3:
                self._pwm_value_next = True
            elif c & 0xF3 == 0xB3:
                self.outputs = ((c >> 2) & 1, (c >> 3) & 1)
            elif self.streaming:
                if c == 0x00:
                    self.streaming = False
            elif c == 0x07:
                reply += self.VERSION
            elif c == 0x0B:
                reply += self.state_reply()
            elif c & 0x3F == 0x03:
                self.rate = {v: k for k, v in bitalino.RATES.items()}[c >> 6]
            elif c & 0x03 in (1, 2):
                mask = c >> 2
                self.inputs = self.fixed_inputs or tuple(i + 1 for i in range(6) if mask >> i & 1)
                self.frame_len = bitalino.frame_size(len(self.inputs))
                self.streaming, self._seq, self._emitted = True, 0, 0
                self._t_start = self.device_time(now)
            elif c & 0x03 == 0:
                self.battery_threshold = c >> 2
        return reply

    def state_reply(self) -> bytes:
        """The 16 bytes that answer state() (0x0B)."""
        body = b"".join(struct.pack("<H", v) for v in [*self._last_adc, self.BATTERY_ADC])
        digital = (self.outputs[0] << 5) | (self.outputs[1] << 4)  # I1 I2 (bits 7, 6) read 0
        frame = np.frombuffer(body + bytes([self.battery_threshold, digital]), dtype=np.uint8).reshape(1, 16).copy()
        frame[0, -1] |= bitalino.crc4(frame)[0]
        return frame.tobytes()

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
            self._last_adc[a - 1] = int(analog[-1, j])
        seq = (self._seq + np.arange(due)) % 16
        self._seq = int(seq[-1] + 1) % 16
        self._emitted += due
        for a in self.inputs:
            self.sent[f"A{a}"] += due
        digital = np.zeros((due, 4), np.int64)
        digital[:, 2:] = self.outputs
        return [bitalino.encode_frames(seq, digital, analog)]

    def unsend(self, n_bytes: int) -> None:
        if self.frame_len:
            for a in self.inputs:
                self.sent[f"A{a}"] -= n_bytes // self.frame_len  # a partly sent frame counts as sent


class PolarModel(SensorModel):
    """Polar H10 PMD: requests on the control point (answered by indication), ACC and ECG notifications.

    From polar-ble-sdk and bleakheart: the features read (ECG and ACC), get settings (op 1: F0 01 type 00 00,
    then per setting [type][count][values, u16 LE]), start (op 2) with its settings checked against what an
    H10 offers (ACC 25/50/100/200 Hz, 16 bit, 2/4/8 g; ECG 130 Hz, 14 bit), stop (op 3), and the status
    codes of the SDK's PmdControlPointResponse: 2 invalid measurement type, 6 already in state (a second
    start: polar-ble-sdk issues 186, 255), 7 invalid resolution, 8 invalid sample rate, 9 invalid range.
    ACC notifications carry 3 x int16 milli-g (frame type 1), ECG ones int24 microvolts (frame type 0), 73 a
    notification as an H10 sends them. Inferred, not from the vendor's docs: the order of settings in the
    reply, a setting left out of a start takes the H10's default, a stop of a measurement not running and a
    setting the measurement does not have are answered 6 and 5 (invalid parameter), an unknown op code 1.
    """

    #: measurement -> setting type -> the values an H10 offers (the first is the default)
    SETTINGS = {polar.ACC: {polar.SAMPLE_RATE: (25, 50, 100, 200), polar.RESOLUTION: (16,), polar.RANGE: (2, 4, 8)},
                polar.ECG: {polar.SAMPLE_RATE: (130,), polar.RESOLUTION: (14,)}}
    DEFAULTS = {polar.ACC: {polar.SAMPLE_RATE: 200, polar.RESOLUTION: 16, polar.RANGE: 8},
                polar.ECG: {polar.SAMPLE_RATE: 130, polar.RESOLUTION: 14}}
    _INVALID = {polar.SAMPLE_RATE: polar.STATUS_INVALID_SAMPLE_RATE, polar.RESOLUTION: polar.STATUS_INVALID_RESOLUTION,
                polar.RANGE: polar.STATUS_INVALID_RANGE}
    STREAMS = {polar.ACC: "acc", polar.ECG: "ecg"}

    def __init__(self, acc: SignalSource, clock: DeviceClock | None = None, per_notification: int = 36,
                 epoch_ns: int = 880_000_000 * 10**9, ecg: SignalSource | None = None, ecg_per_notification: int = 73) -> None:
        super().__init__(clock)
        self.sources = {polar.ACC: acc, polar.ECG: ecg if ecg is not None else synthetic_ecg()}
        self.per = {polar.ACC: per_notification, polar.ECG: ecg_per_notification}
        self.rates = {polar.ACC: 100, polar.ECG: 130}
        self.epoch_ns = epoch_ns  # device time 0 in ns since 2000-01-01 (the strap's clock is set by the phone)
        self.active: dict[int, float] = {}  # measurement -> device time it started at
        self._emitted = {polar.ACC: 0, polar.ECG: 0}
        self.jump_ns = 0  # added to stamps from now on (a backward jump when negative)

    @property
    def rate(self) -> int:
        return self.rates[polar.ACC]

    @property
    def streaming(self) -> bool:
        return bool(getattr(self, "active", None))

    @streaming.setter
    def streaming(self, on: bool) -> None:
        if not on and hasattr(self, "active"):
            self.active.clear()  # the strap stops every measurement (its central left, or the test ends)

    def command(self, data: bytes, now: float, target: str | None = None) -> bytes:
        data = bytes(data)
        if target != polar.CONTROL_POINT or len(data) < 2:
            return b""
        op, meas = data[0], data[1]
        if op not in (polar.OP_GET, polar.OP_START, polar.OP_STOP):
            return bytes([0xF0, op, meas, 0x01, 0x00])
        if meas not in self.SETTINGS:
            return bytes([0xF0, op, meas, polar.STATUS_INVALID_MEASUREMENT_TYPE, 0x00])
        if op == polar.OP_GET:
            body = b"".join(bytes([kind, len(values)]) + b"".join(struct.pack("<H", v) for v in values)
                            for kind, values in self.SETTINGS[meas].items())
            return bytes([0xF0, op, meas, polar.STATUS_OK, 0x00]) + body
        if op == polar.OP_STOP:
            status = polar.STATUS_OK if self.active.pop(meas, None) is not None else polar.STATUS_ALREADY_IN_STATE
            return bytes([0xF0, op, meas, status, 0x00])
        if meas in self.active:
            return bytes([0xF0, op, meas, polar.STATUS_ALREADY_IN_STATE, 0x00])
        settings, status = dict(self.DEFAULTS[meas]), self._read_settings(meas, data[2:])
        if isinstance(status, dict):
            settings.update(status)
            status = polar.STATUS_OK
        if status == polar.STATUS_OK:
            self.rates[meas] = settings[polar.SAMPLE_RATE]
            self.active[meas] = self.device_time(now)
            self._emitted[meas] = 0
        return bytes([0xF0, op, meas, status, 0x00])

    def _read_settings(self, meas: int, body: bytes) -> dict[int, int] | int:
        """A start request's settings, or the status that refuses them."""
        out, offered, i = {}, self.SETTINGS[meas], 0
        while i < len(body):
            if i + 2 > len(body):
                return 4  # invalid length
            kind, count = body[i], body[i + 1]
            width = 1 if kind == 4 else 2
            if count != 1 or i + 2 + width > len(body):
                return 4
            value = int.from_bytes(body[i + 2 : i + 2 + width], "little")
            if kind not in offered:
                return 5  # invalid parameter
            if value not in offered[kind]:
                return self._INVALID[kind]
            out[kind] = value
            i += 2 + width
        return out

    def produce(self, now: float) -> list[bytes]:
        out = []
        for meas, t_start in list(self.active.items()):
            rate, n = self.rates[meas], self.per[meas]
            total = int((self.device_time(now) - t_start) * rate)
            while total - self._emitted[meas] >= n:
                x = self.sources[meas].take(n, rate)
                t_last = t_start + (self._emitted[meas] + n - 1) / rate
                stamp = self.epoch_ns + int(round(t_last * 1e9)) + self.jump_ns
                if meas == polar.ACC:
                    mg = np.clip(np.rint(x * 1000).astype(np.int64), -32768, 32767)  # g -> milli-g
                    out.append(polar.encode_notification(polar.ACC, stamp, mg, frame_type=1))
                else:
                    uv = np.clip(np.rint(x[:, :1] * 1000).astype(np.int64), -(1 << 23), (1 << 23) - 1)  # mV -> uV
                    out.append(polar.encode_notification(polar.ECG, stamp, uv))
                self._emitted[meas] += n
                self.sent[self.STREAMS[meas]] += n
        return out


def synthetic_ecg(rate: float = 130.0, seconds: float = 60.0, bpm: float = 66.0, seed: int = 0) -> SignalSource:
    """A synthetic ECG in millivolts (P, QRS and T waves as Gaussians, beat-to-beat jitter): the data sets at
    hand hold no ECG recording, so the simulated H10's ECG is made up and says so in its name."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t)
    beat = 0.0
    while beat < seconds:
        for offset, width, height in ((-0.2, 0.025, 0.12), (-0.03, 0.01, -0.1), (0.0, 0.012, 1.1),
                                      (0.03, 0.01, -0.25), (0.25, 0.05, 0.3)):
            x += height * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
        beat += 60.0 / bpm * (1 + 0.03 * rng.standard_normal())
    return SignalSource(x[:, None], rate, name="synthetic ECG (no recording at hand)")


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
           "bitalino_adc_emg", "bitalino_adc_eda", "synthetic_ecg"]
