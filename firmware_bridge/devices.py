"""Devices: one protocol parser + one clock model + scaling to physical units, per connected sensor.

A device is sans-IO like the parsers: a link (serial or BLE, `firmware_bridge.links`) hands it bytes with
their host arrival time, and it returns `Batch`es: samples of one stream in physical units with the host
time of their first sample. It also says what to write to start and stop the sensor, and keeps the
counters that make every sample accounted for: `delivered` plus `lost` (by reason) is what the sensor sent.

Device times become host times through a `ClockModel` per device, fitted on (device time of the newest
sample, arrival time) pairs, so streams of several devices line up. BITalino has no timestamp: its
device time is the frame count (delivered plus lost by sequence number) over the sampling rate.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.clock import ClockModel
from firmware_bridge.protocols import bitalino, cxf, polar

log = logging.getLogger(__name__)

NORDIC_UART_SERVICE = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
NORDIC_UART_RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"  # host writes
NORDIC_UART_TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"  # device notifies

BITALINO_BLE_SERVICE = "c566488a-0882-4e1b-a6d0-0b717e652234"
BITALINO_BLE_COMMANDS = "4051eb11-bf0a-4c74-8730-a48f4193fcea"
BITALINO_BLE_FRAMES = "40fdba6b-672e-47c4-808a-e529adff3633"

# BITalino transfer functions by sensor kind (the vendor's, VCC 3.3 V); raw passes the ADC value on
BITALINO_SCALES = {"emg": bitalino.emg_mv, "eda": bitalino.eda_us,
                   "acc": lambda adc, bits: bitalino.acc_g(adc), "raw": lambda adc, bits: np.asarray(adc, np.float32)}
BITALINO_UNITS = {"emg": "mV", "eda": "uS", "acc": "g", "raw": "adc"}


class DeviceError(ValueError):
    """A device configuration that cannot work (bad channel, rate, stream name) or a refused start."""


@dataclass
class Batch:
    stream: str  # the stream's (modality) name
    samples: np.ndarray  # [n, C] float32, physical units
    t0: float  # host time of the first sample, seconds
    rate: float  # samples per second (nominal, device clock)
    arrival: float  # host time the bytes that completed this batch arrived
    contiguous: bool = False  # follows the stream's previous batch with no sample missing (since the last connect)
    wall: float = 0.0  # time.perf_counter() when the link read those bytes (for latency, whatever the clock)


@dataclass
class StreamInfo:
    name: str
    channels: int
    rate: float
    units: str


@dataclass
class DeviceCounters:
    connects: int = 0
    reconnects: int = 0
    bytes_in: int = 0
    frames: int = 0
    crc_errors: int = 0
    sequence_errors: int = 0
    resyncs: int = 0
    bytes_skipped: int = 0
    bad_notifications: int = 0
    callback_errors: int = 0  # reads or notifications whose handling raised (a bug): dropped and logged, link kept
    cut_unknown: int = 0  # frames cut by a disconnect before their size was known (CXF header cut short)
    diagnosis: str = ""  # what a stream without valid frames probably is (a BITalino with the wrong channel count)
    delivered: Counter = field(default_factory=Counter)  # stream -> samples handed on
    lost: Counter = field(default_factory=Counter)  # reason -> samples (of all streams) known to be lost

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["delivered"], d["lost"] = dict(self.delivered), dict(self.lost)
        return d


class Device:
    """Base: a named sensor with streams; subclasses implement the protocol."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.streams: dict[str, StreamInfo] = {}
        self.counters = DeviceCounters()

    # what a link writes, as (characteristic uuid or None for a serial port, bytes)
    def start_commands(self) -> list[tuple[str | None, bytes]]:
        return []

    def stop_commands(self) -> list[tuple[str | None, bytes]]:
        return []

    def notify_uuids(self) -> list[str]:
        """BLE characteristics to subscribe to (data first)."""
        return []

    def started(self) -> bool:
        """True once the sensor confirmed its start (Polar answers on its control point)."""
        return True

    def connected(self) -> None:
        """A link (re)opened: start a fresh stream."""
        self.counters.connects += 1
        self.counters.reconnects += self.counters.connects > 1

    def disconnected(self, arrival: float) -> list[Batch]:
        """The link closed: deliver what is whole, count what is cut."""
        return []

    def feed(self, data: bytes, arrival: float, source: str | None = None) -> list[Batch]:
        raise NotImplementedError

    # device counter <- parser counter, for the counters a parser keeps (its subclass sets them)
    PARSER_COUNTERS: dict[str, str] = {}

    def _new_parser(self, parser) -> None:
        """Start a fresh parser (each connection); what the old one counted stays in the device's counters."""
        self.parser = parser
        self._parser_seen = {field: 0 for field in self.PARSER_COUNTERS.values()}

    def _count_parser(self) -> None:
        """Add what the parser counted since the last call to the device's counters."""
        for mine, theirs in self.PARSER_COUNTERS.items():
            now = getattr(self.parser.counters, theirs)
            setattr(self.counters, mine, getattr(self.counters, mine) + now - self._parser_seen[theirs])
            self._parser_seen[theirs] = now

    def _deliver(self, stream: str, samples: np.ndarray, t0: float, arrival: float, contiguous: bool) -> Batch:
        self.counters.delivered[stream] += len(samples)
        return Batch(stream, samples, float(t0), self.streams[stream].rate, arrival, contiguous)


class BitalinoDevice(Device):
    """BITalino (r)evolution over Bluetooth serial (a port) or BLE (BT121: frames span notifications).

    channels maps an analog input (1..6 for A1..A6) to (stream name, sensor kind in BITALINO_SCALES); each
    input becomes its own one-channel stream.
    """

    PARSER_COUNTERS = {f: f for f in ("bytes_in", "frames", "crc_errors", "sequence_errors", "resyncs",
                                      "bytes_skipped")}

    def __init__(self, name: str, channels: dict[int, tuple[str, str]], rate: int = 1000, ble: bool = False) -> None:
        super().__init__(name)
        if rate not in bitalino.RATES:
            raise DeviceError(f"{name}: BITalino samples at {sorted(bitalino.RATES)} Hz, not {rate}")
        if not channels or any(not 1 <= a <= 6 for a in channels):
            raise DeviceError(f"{name}: BITalino analog inputs are A1..A6 (1..6), got {sorted(channels)}")
        for a, (stream, kind) in channels.items():
            if kind not in BITALINO_SCALES:
                raise DeviceError(f"{name}: A{a} sensor kind {kind!r}; known: {', '.join(BITALINO_SCALES)}")
        self.inputs = tuple(sorted(channels))
        self.rate = rate
        self.ble = ble
        self.bits = [bitalino.ANALOG_BITS[a - 1] for a in self.inputs]
        self.mapping = [channels[a] for a in self.inputs]
        for stream, kind in self.mapping:
            self.streams[stream] = StreamInfo(stream, 1, float(rate), BITALINO_UNITS[kind])
        self._reset()

    def _reset(self) -> None:
        # the firmware restarts its sequence number at 0 with each start command (as the simulator does; the
        # vendor's own API starts its sequence check from the first frame instead, so this is an assumption)
        self._new_parser(bitalino.BitalinoParser(len(self.inputs), first_seq=0))
        self._index = 0  # frames since start: delivered + lost by sequence number
        self.clock = ClockModel()  # the sample counter restarts with every start command
        self._dry_since: float | None = None  # arrival of the first bytes after the last valid frame

    def start_commands(self) -> list[tuple[str | None, bytes]]:
        target = BITALINO_BLE_COMMANDS if self.ble else None
        # stop first: a device left streaming by an unclean exit ignores everything else (PROTOCOLS.md)
        return [(target, bitalino.CMD_STOP), (target, bitalino.cmd_sampling_rate(self.rate)),
                (target, bitalino.cmd_start(tuple(a - 1 for a in self.inputs)))]

    def stop_commands(self) -> list[tuple[str | None, bytes]]:
        return [(BITALINO_BLE_COMMANDS if self.ble else None, bitalino.CMD_STOP)]

    def notify_uuids(self) -> list[str]:
        return [BITALINO_BLE_FRAMES] if self.ble else []

    def connected(self) -> None:
        super().connected()
        self._reset()

    #: stream time without a valid frame after which the bytes are diagnosed (a stream too slow to fill
    #: bitalino.DIAGNOSE_BYTES in that time), and the bytes that takes at least
    DIAGNOSE_AFTER_S, DIAGNOSE_MIN_BYTES = 2.0, 64

    def feed(self, data: bytes, arrival: float, source: str | None = None) -> list[Batch]:
        before = self.parser.counters.frames_lost, self.parser.counters.frames_lost_at_least
        frames = self.parser.feed(bytes(data))
        if len(frames):
            self._dry_since = None
        elif self._dry_since is None:
            self._dry_since = arrival
        elif (arrival - self._dry_since >= self.DIAGNOSE_AFTER_S and self.parser.diagnosis is None
              and self.parser.bytes_since_frame >= self.DIAGNOSE_MIN_BYTES):
            self.parser.diagnose()
        if self.parser.diagnosis:
            self.counters.diagnosis = self.parser.diagnosis
        return self._batches(frames, arrival, before)

    def disconnected(self, arrival: float) -> list[Batch]:
        before = self.parser.counters.frames_lost, self.parser.counters.frames_lost_at_least
        skipped = self.parser.counters.bytes_skipped
        out = self._batches(self.parser.flush(), arrival, before)
        cut = self.parser.counters.bytes_skipped - skipped
        if cut:  # a frame cut by the disconnect (its samples were sent, never whole)
            n = -(-cut // self.parser.length)
            self.counters.lost["cut_by_disconnect"] += n * len(self.inputs)
        return out

    def _batches(self, frames: bitalino.Frames, arrival: float, lost_before: tuple[int, int]) -> list[Batch]:
        self._count_parser()
        at_least = self.parser.counters.frames_lost_at_least - lost_before[1]
        exact = self.parser.counters.frames_lost - lost_before[0] - at_least
        if exact:
            self.counters.lost["sequence_gap"] += exact * len(self.inputs)
        if at_least:  # a 4-bit sequence number cannot count laps of 16: a lower bound, kept apart
            self.counters.lost["sequence_gap_at_least"] += at_least * len(self.inputs)
        if not len(frames):
            return []
        # device index of each frame, counting the lost ones before it
        idx = self._index + np.cumsum(frames.lost_before + 1) - 1
        self._index = int(idx[-1]) + 1
        self.clock.observe(float(idx[-1]) / self.rate, arrival)
        out = []
        # a sequence gap splits the batch, so every batch is contiguous at the nominal rate
        cuts = np.flatnonzero(frames.lost_before[1:]) + 1
        for part_start, part_stop in zip(np.r_[0, cuts], np.r_[cuts, len(frames)]):
            t0 = float(self.clock.to_host(float(idx[part_start]) / self.rate))
            contiguous = idx[part_start] > 0 and frames.lost_before[part_start] == 0
            for j, (stream, kind) in enumerate(self.mapping):
                x = BITALINO_SCALES[kind](frames.analog[part_start:part_stop, j], self.bits[j])
                out.append(self._deliver(stream, np.asarray(x, np.float32)[:, None], t0, arrival, bool(contiguous)))
        return out


class PolarDevice(Device):
    """Polar H10 over BLE: ECG (130 Hz, microvolts -> mV) and/or ACC (25-200 Hz, milli-g -> g) via PMD."""

    ECG_RATE = 130

    def __init__(self, name: str, acc: str | None = "acc", ecg: str | None = None, acc_rate: int = 100,
                 acc_range_g: int = 8) -> None:
        super().__init__(name)
        if acc_rate not in (25, 50, 100, 200):
            raise DeviceError(f"{name}: Polar H10 ACC runs at 25, 50, 100 or 200 Hz, not {acc_rate}")
        if not acc and not ecg:
            raise DeviceError(f"{name}: choose at least one of acc and ecg")
        self.acc_rate, self.acc_range = acc_rate, acc_range_g
        self.names = {polar.ACC: acc, polar.ECG: ecg}
        self.rates = {polar.ACC: float(acc_rate), polar.ECG: float(self.ECG_RATE)}
        if acc:
            self.streams[acc] = StreamInfo(acc, 3, float(acc_rate), "g")
        if ecg:
            self.streams[ecg] = StreamInfo(ecg, 1, float(self.ECG_RATE), "mV")
        self.clock = ClockModel()
        self._pending: set[int] = set()
        self._last_ns: dict[int, int] = {}

    def measurements(self) -> list[int]:
        return [m for m in (polar.ECG, polar.ACC) if self.names[m]]

    def start_commands(self) -> list[tuple[str | None, bytes]]:
        cmds = []
        for m in self.measurements():
            settings = {0: self.acc_rate, 1: 16, 2: self.acc_range} if m == polar.ACC else {0: self.ECG_RATE, 1: 14}
            cmds.append((polar.CONTROL_POINT, polar.start_request(m, settings)))
        return cmds

    def stop_commands(self) -> list[tuple[str | None, bytes]]:
        return [(polar.CONTROL_POINT, polar.stop_request(m)) for m in self.measurements()]

    def notify_uuids(self) -> list[str]:
        return [polar.DATA, polar.CONTROL_POINT]

    def connected(self) -> None:
        super().connected()
        self._pending = set(self.measurements())
        self._refused: str | None = None
        self._last_ns.clear()

    def started(self) -> bool:
        if self._refused:  # raised here, in the link's start, not in the notification callback that heard it
            raise DeviceError(self._refused)
        return not self._pending

    def _control(self, data: bytes) -> None:
        # reply: F0 op measurement status ...; status 0 is success, 6 "already in state": the measurement is
        # running already (left streaming by a session that ended uncleanly), which is what a start wants
        if len(data) >= 4 and data[0] == 0xF0 and data[1] == polar.OP_START and data[2] in self._pending:
            if data[3] not in (polar.STATUS_OK, polar.STATUS_ALREADY_IN_STATE):
                self._refused = (f"{self.name}: Polar refused to start measurement {data[2]}: "
                                 f"{polar.status_text(data[3])}")
            self._pending.discard(data[2])

    def feed(self, data: bytes, arrival: float, source: str | None = None) -> list[Batch]:
        if source == polar.CONTROL_POINT:
            self._control(bytes(data))
            return []
        self.counters.bytes_in += len(data)
        try:
            frame = polar.parse_notification(bytes(data))
        except polar.PmdError as e:
            # a notification is a whole frame: its samples are lost, and how many is unknown without it
            self.counters.bad_notifications += 1
            log.warning("%s: dropped a malformed PMD notification (%s)", self.name, e)
            return []
        name = self.names.get(frame.measurement)
        if not name:
            return []
        n, nominal = len(frame.samples), self.rates[frame.measurement]
        if n == 0:  # parse_notification refuses these; a frame without samples must never reach dt / n below
            self.counters.bad_notifications += 1
            return []
        self.counters.frames += 1
        last = self._last_ns.get(frame.measurement)
        self._last_ns[frame.measurement] = frame.t_last_ns
        # sample spacing from the device's own stamps when they agree with the nominal rate within 10%
        # (the H10's "130 Hz" ECG really runs at 128-131 Hz), else nominal
        period, contiguous = 1.0 / nominal, False
        if last is not None:
            dt = (frame.t_last_ns - last) / 1e9
            if 0.9 * n / nominal <= dt <= 1.1 * n / nominal:
                period, contiguous = dt / n, True
            elif dt > 1.1 * n / nominal:  # PMD has no sequence numbers: a gap in the stamps is lost samples
                missing = int(round(dt * nominal)) - n
                if missing > 0:
                    self.counters.lost["timestamp_gap_estimated"] += missing
        device_last = frame.t_last_ns / 1e9
        self.clock.observe(device_last, arrival)
        t0 = float(self.clock.to_host(device_last - (n - 1) * period))
        scale = 1e-3  # milli-g -> g, microvolts -> millivolts
        return [self._deliver(name, frame.samples.astype(np.float32) * scale, t0, arrival, contiguous)]


class CxfDevice(Device):
    """A custom board speaking CXF (firmware_bridge/FRAME_FORMAT.md) over serial or BLE (Nordic UART).

    streams maps the board's modality id to (StreamInfo, scale): physical value = raw * scale.
    """

    PARSER_COUNTERS = {"bytes_in": "bytes_in", "crc_errors": "crc_errors", "bytes_skipped": "bytes_skipped",
                       "sequence_errors": "bad_headers"}

    def __init__(self, name: str, streams: dict[int, tuple[StreamInfo, float]], ble: bool = False) -> None:
        super().__init__(name)
        if not streams:
            raise DeviceError(f"{name}: a CXF device needs at least one modality id -> stream")
        self.by_id = dict(streams)
        for info, _ in streams.values():
            self.streams[info.name] = info
        self.ble = ble
        self.clock = ClockModel()
        self._new_parser(cxf.CxfParser())
        self._next: dict[int, int] = {}  # modality id -> index of the next sample
        self._unknown: set[tuple[int, int]] = set()

    def notify_uuids(self) -> list[str]:
        return [NORDIC_UART_TX] if self.ble else []

    def connected(self) -> None:
        super().connected()
        self._new_parser(cxf.CxfParser())  # sample indices continue or restart with the board: the parser tells
        self._next = {}

    def disconnected(self, arrival: float) -> list[Batch]:
        cut = self.parser.flush()
        if cut is None:
            self.counters.cut_unknown += 1
            log.warning("%s: the link dropped inside a frame header; that frame's samples cannot be counted", self.name)
        elif cut:
            self.counters.lost["cut_by_disconnect"] += cut
        self._count_parser()
        return []

    def feed(self, data: bytes, arrival: float, source: str | None = None) -> list[Batch]:
        lost_before = sum(self.parser.counters.samples_lost.values())
        frames = self.parser.feed(bytes(data))
        lost = sum(self.parser.counters.samples_lost.values()) - lost_before
        self._count_parser()
        out = []
        for f in frames:
            entry = self.by_id.get(f.modality)
            if entry is None:
                if (f.device, f.modality) not in self._unknown:
                    self._unknown.add((f.device, f.modality))
                    log.warning("%s: frames of unconfigured modality id %d (device %d) are dropped and counted",
                                self.name, f.modality, f.device)
                self.counters.lost["unconfigured_modality"] += len(f.samples)
                continue
            info, scale = entry
            if f.samples.shape[1] != info.channels:
                self.counters.lost["wrong_channel_count"] += len(f.samples)
                log.warning("%s: modality %d frame has %d channels, configured %d; dropped", self.name,
                            f.modality, f.samples.shape[1], info.channels)
                continue
            self.counters.frames += 1
            t_first = f.t_us / 1e6
            self.clock.observe(t_first + (len(f.samples) - 1) / info.rate, arrival)
            x = f.samples.astype(np.float32) * np.float32(scale)
            contiguous = self._next.get(f.modality) == f.first_index
            self._next[f.modality] = (f.first_index + len(f.samples)) % (1 << 32)
            out.append(self._deliver(info.name, x, float(self.clock.to_host(t_first)), arrival, contiguous))
        if lost:  # by the gap in sample indices: exact
            self.counters.lost["sequence_gap"] += lost
        return out
