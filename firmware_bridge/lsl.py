"""Lab Streaming Layer (LSL): streams in as a device, predictions and raw streams out. Needs pylsl (the `lsl` extra).

Inlet (`--device lsl:<stream name or type>[,map=...][,seq=<channel>][,dejitter=1][,timeout=<s>]`): the stream is
resolved by name, else by type, when the device string is read (its channel count and rate fix the bundle streams
it feeds); `map=acc:0-2+eda:3` sends channels 0-2 to the bundle's `acc` and channel 3 to `eda` (0-based; `i`,
`i-j` and `i/j/k`, joined by `+`); without a map every channel feeds the one modality named like the stream.
`seq=<channel>` names a channel that counts samples (as OpenSignals' nSeq does): it is left out of the streams
and gives an exact ledger. The link (`LslLink`) opens an inlet with LSL's own time correction (postprocessing
`proc_clocksync | proc_monotonize`, plus `proc_dejitter` with `dejitter=1`) and pulls chunks in a worker thread, so
inference never waits on it. A lost stream (its outlet closed, its app or host gone) is a disconnect: the hub
hears it at once, and the link resolves the stream again with backoff, preferring the same source_id.

Time: after clock sync LSL timestamps are this host's `local_clock()`; the device maps them to the hub's clock
by the offset between the two clocks read together at each pull (on Linux both are CLOCK_MONOTONIC).

The ledger (`LslDevice`): every sample pulled is delivered; lost samples are counted by reason: `sequence_gap` from
the seq channel (exact, across reconnects too: samples sent while the inlet was away count as lost; a counter
that goes back is a restarted sender, not a gap), else `timestamp_gap_estimated` from the timestamps within one
connection (a step of more than 1.5 sample periods; with dejitter=1 LSL evens the timestamps out and hides gaps:
use seq). Without seq nothing can be said across a reconnect. A lost LSL sample costs one sample of every stream
mapped from it.

Outlets: `PredictionOutlet` publishes each prediction as one sample of an irregular-rate float32 stream (the class
probabilities, then 1/0 per modality present; NaN probabilities when no sensor is present), stamped with the LSL
time of the end of its window; `RawOutlets` re-publishes the streams the bridge delivers (physical units, device
rates), so LabRecorder records them beside the predictions.

pylsl's x86_64 wheel bundles liblsl; its aarch64 wheel (a Raspberry Pi) does not: install liblsl (see the
README) or point PYLSL_LIB at it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from firmware_bridge.devices import Batch, Device, DeviceError, StreamInfo
from firmware_bridge.links import Link, Sink

log = logging.getLogger(__name__)

RESOLVE_TIMEOUT_S = 2.0
PULL_TIMEOUT_S = 0.05  # a pull returns at the first sample or after this, so a stop is seen within it
MAX_CHUNK = 4096
PI_HINT = ("LSL needs pylsl and liblsl: pip install '.[lsl]' (pylsl 1.18.6; its x86_64 wheel bundles liblsl). On a "
           "Raspberry Pi (aarch64) the wheel has no liblsl: build it (see the README, 'LSL on a Raspberry Pi') or set "
           "PYLSL_LIB to a liblsl.so")


def keep_on_this_machine(session: str = "crossl-edge") -> Path:
    """Make this process's LSL (and its children's) stay on this machine, in a session of its own: write an LSL
    configuration (resolve scope "machine": loopback, no multicast or broadcast on the network; a unique
    SessionID, so runs beside each other never see each other's streams; liblsl's log quieter) and point
    LSLAPICFG at it. Call before pylsl is first imported; a LSLAPICFG already set is kept. For tests and benchmarks
    whose streams are all on this host."""
    import os
    import tempfile
    import uuid

    if os.environ.get("LSLAPICFG"):
        return Path(os.environ["LSLAPICFG"])
    cfg = Path(tempfile.mkdtemp(prefix="crossl-lsl-")) / "lsl_api.cfg"
    cfg.write_text("[ports]\nIPv6 = disable\n[multicast]\nResolveScope = machine\n"
                   f"[lab]\nSessionID = {session}-{uuid.uuid4().hex}\n[log]\nlevel = -3\n")
    os.environ["LSLAPICFG"] = str(cfg)
    return cfg


def pylsl():
    """The pylsl module; DeviceError saying how to install it (and liblsl) when it cannot load."""
    try:
        import pylsl as lsl
    except (ImportError, OSError, RuntimeError) as e:  # RuntimeError: pylsl found no liblsl
        raise DeviceError(f"{PI_HINT} ({type(e).__name__}: {str(e).strip()[:300]})") from e
    return lsl


@dataclass(frozen=True)
class LslStream:
    """What the device needs to know of a resolved LSL stream."""

    name: str
    type: str
    channels: int
    rate: float  # nominal Hz; 0: irregular
    source_id: str
    hostname: str
    string: bool  # cf_string: markers, not samples

    @classmethod
    def of(cls, info: Any) -> "LslStream":
        lsl = pylsl()
        return cls(info.name(), info.type(), info.channel_count(), float(info.nominal_srate()), info.source_id(),
                   info.hostname(), info.channel_format() == lsl.cf_string)

    def describe(self) -> str:
        return (f"{self.name!r} (type {self.type!r}, {self.channels} channels at {self.rate:g} Hz, source_id "
                f"{self.source_id!r}, on {self.hostname})")


def predicate(query: str) -> str:
    """The LSL resolve predicate for 'a stream named or typed `query`'."""
    if not query or "'" in query or "\\" in query:
        raise DeviceError(f"LSL stream name or type {query!r} must be non-empty, without quotes or backslashes")
    return f"name='{query}' or type='{query}'"


def resolve(query: str, timeout: float, source_id: str | None = None) -> list[Any]:
    """pylsl StreamInfos of the streams named or typed `query` (those with `source_id` first when given)."""
    lsl = pylsl()
    found = lsl.resolve_bypred(predicate(query), 1, timeout)
    return sorted(found, key=lambda i: (source_id is not None and i.source_id() != source_id, i.created_at()))


def parse_channels(text: str, n: int, where: str) -> list[int]:
    """'0-2', '3', '0/2/5' -> channel indices, each within 0..n-1."""
    out: list[int] = []
    for part in text.split("/"):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise DeviceError(f"{where}: channels {text!r}: expected i, i-j or i/j/k (0-based)")
        a, b = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if b < a or b >= n:
            raise DeviceError(f"{where}: channels {text!r} are not within 0..{n - 1} of the stream's {n} channels")
        out += range(a, b + 1)
    return out


def parse_map(text: str | None, query: str, n: int, seq: int | None, where: str) -> dict[str, list[int]]:
    """map=<stream>:<channels>[+<stream>:<channels>]... -> {stream: channels}; default: every channel but seq, in
    one stream named like the LSL stream."""
    if text is None:
        name = query.lower()
        if not re.fullmatch(r"[a-z0-9_]+", name):
            raise DeviceError(f"{where}: the stream name {query!r} is no modality name; say which channels feed which "
                              "modality, e.g. map=acc:0-2+eda:3")
        return {name: [c for c in range(n) if c != seq]}
    mapping: dict[str, list[int]] = {}
    for item in text.split("+"):
        stream, sep, chans = item.partition(":")
        if not sep or not re.fullmatch(r"[a-z0-9_]+", stream):
            raise DeviceError(f"{where}: map entry {item!r}: expected <modality>:<channels>, e.g. acc:0-2")
        if stream in mapping:
            raise DeviceError(f"{where}: map names {stream!r} twice")
        mapping[stream] = parse_channels(chans, n, where)
    used = [c for chans in mapping.values() for c in chans] + ([seq] if seq is not None else [])
    if len(set(used)) != len(used):
        raise DeviceError(f"{where}: a channel is mapped twice (or is also the seq channel): {text}")
    return mapping


class LslDevice(Device):
    """One LSL stream's chunks -> Batches of the bundle streams mapped from it (sans-IO; see the module docstring)."""

    def __init__(self, name: str, stream: LslStream, mapping: dict[str, list[int]], seq: int | None = None) -> None:
        super().__init__(name)
        if stream.string:
            raise DeviceError(f"{name}: LSL stream {stream.describe()} carries strings (markers), not samples")
        if not stream.rate > 0:
            raise DeviceError(f"{name}: LSL stream {stream.describe()} has an irregular rate; a model needs samples "
                              "at a fixed rate")
        self.stream, self.mapping, self.seq = stream, mapping, seq
        self.rate = stream.rate
        for s, chans in mapping.items():
            self.streams[s] = StreamInfo(s, len(chans), stream.rate, "")
        self.time_correction_s: float | None = None  # LSL's estimate at the last connect (remote - local clock)
        self._next_seq: int | None = None  # kept across reconnects: a counter tells what was missed meanwhile
        self._last_t: float | None = None  # LSL time of the last sample of this connection

    def connected(self) -> None:
        super().connected()
        self._last_t = None

    def feed(self, data: bytes, arrival: float, source: str | None = None) -> list[Batch]:
        raise TypeError("an LSL device takes chunks of samples (feed_chunk), not bytes")

    def _count(self, reason: str, samples: int) -> None:
        if samples > 0:
            self.counters.lost[reason] += samples * len(self.mapping)

    def feed_chunk(self, x: np.ndarray, ts: np.ndarray, arrival: float, offset: float) -> list[Batch]:
        """x [n, channels] and LSL timestamps ts [n] (this host's LSL clock) -> batches in hub time (LSL time +
        offset); counts lost samples (see the module docstring)."""
        x, ts = np.asarray(x), np.asarray(ts, np.float64)
        n = len(ts)
        if n == 0:
            return []
        if x.ndim != 2 or x.shape != (n, self.stream.channels):
            raise ValueError(f"{self.name}: chunk of shape {x.shape} for {n} timestamps and {self.stream.channels} channels")
        self.counters.frames += 1
        self.counters.bytes_in += x.nbytes
        period = 1.0 / self.rate
        starts_fresh = np.zeros(n, bool)  # a sample that does not follow the one before it
        if self.seq is not None:
            seqs = np.rint(x[:, self.seq]).astype(np.int64)
            prev = np.r_[self._next_seq - 1 if self._next_seq is not None else seqs[0] - 1, seqs[:-1]]
            step = seqs - prev
            self._count("sequence_gap", int(step[step > 1].sum() - (step > 1).sum()))
            if (step < 1).any():
                log.info("%s: the sample counter went back (%d times): the sender restarted; not a gap",
                         self.name, int((step < 1).sum()))
            starts_fresh = step != 1
            self._next_seq = int(seqs[-1]) + 1
        else:
            prev_t = np.r_[self._last_t if self._last_t is not None else ts[0] - period, ts[:-1]]
            gap = (ts - prev_t) * self.rate
            missing = np.where(gap > 1.5, np.rint(gap) - 1, 0).astype(np.int64)
            self._count("timestamp_gap_estimated", int(missing.sum()))
            starts_fresh = (gap > 1.5) | (gap < 0.5)
        if self._last_t is None:
            starts_fresh[0] = True  # the first chunk of a connection starts a fresh stretch
        self._last_t = float(ts[-1])
        cuts = np.flatnonzero(starts_fresh[1:]) + 1
        out = []
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
            t0 = float(ts[a]) + offset
            for s, chans in self.mapping.items():
                out.append(self._deliver(s, np.ascontiguousarray(x[a:b, chans], dtype=np.float32), t0, arrival,
                                         not bool(starts_fresh[a])))
        return out


class LslLink(Link):
    """An LSL inlet: resolve (by name or type, the same source_id first), open with clock sync, pull in a thread."""

    transport = "lsl"

    def __init__(self, device: LslDevice, query: str, timeout_s: float = RESOLVE_TIMEOUT_S, dejitter: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(device, query, **kwargs)
        self.timeout_s, self.dejitter = timeout_s, dejitter
        self.inlet = None

    def _open(self) -> None:
        lsl = pylsl()
        dev: LslDevice = self.device  # type: ignore[assignment]
        infos = resolve(self.address, self.timeout_s, dev.stream.source_id or None)
        if not infos:
            raise OSError(f"no LSL stream named or typed {self.address!r} found within {self.timeout_s:g} s")
        found = LslStream.of(infos[0])
        if (found.channels, found.rate) != (dev.stream.channels, dev.stream.rate):
            raise DeviceError(f"{dev.name}: LSL stream {found.describe()} is back with another layout than "
                              f"{dev.stream.describe()}; restart the bridge to take it")
        flags = lsl.proc_clocksync | lsl.proc_monotonize | (lsl.proc_dejitter if self.dejitter else 0)
        inlet = lsl.StreamInlet(infos[0], max_buflen=360, processing_flags=flags, recover=False)
        try:
            inlet.open_stream(self.timeout_s)
            dev.time_correction_s = float(inlet.time_correction(self.timeout_s))
        except (lsl.util.TimeoutError, lsl.util.LostError) as e:
            raise OSError(f"LSL stream {found.describe()}: {type(e).__name__}: {e}") from e
        self.inlet = inlet

    async def open(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._open)

    async def write(self, target: str | None, data: bytes) -> None:  # an LSL stream takes no commands
        return None

    def _pull(self) -> tuple[np.ndarray, np.ndarray, float, float]:
        """One chunk (waits for its first sample at most PULL_TIMEOUT_S) and the hub - LSL clock offset."""
        lsl = pylsl()
        try:
            x, ts = self.inlet.pull_chunk(PULL_TIMEOUT_S, MAX_CHUNK, min_samples=1, as_numpy=True)
        except lsl.util.LostError as e:
            raise OSError(f"LSL stream lost: {e}") from e
        hub = self.clock()
        return x, ts, hub, hub - lsl.local_clock()

    async def stream(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        dev: LslDevice = self.device  # type: ignore[assignment]
        while not self._stop.is_set():
            x, ts, arrival, offset = await loop.run_in_executor(None, self._pull)
            if len(ts):
                sink.deliver(dev, self._guarded(lambda _: dev.feed_chunk(x, ts, arrival, offset),
                                                f"a chunk of {len(ts)} samples"))

    async def close(self, was_open: bool) -> None:
        inlet, self.inlet = self.inlet, None
        if inlet is not None:
            inlet.close_stream()


def lsl_link(text: str, rest: str, opts: dict[str, str], clock=None) -> LslLink:
    """`lsl:<name or type>[,map=...][,seq=N][,dejitter=1][,timeout=S]` (rest: what follows 'lsl:', opts: the
    parsed options, consumed here) -> a link whose device knows the resolved stream's layout."""
    query = rest
    try:
        timeout = float(opts.pop("timeout", RESOLVE_TIMEOUT_S))
        seq = int(opts.pop("seq")) if "seq" in opts else None
    except ValueError as e:
        raise DeviceError(f"--device {text!r}: {e}") from e
    dejitter = opts.pop("dejitter", "0") not in ("0", "no", "false")
    infos = resolve(query, timeout)
    if not infos:
        raise DeviceError(f"--device {text!r}: no LSL stream named or typed {query!r} found within {timeout:g} s; "
                          "start its outlet first (or raise timeout=)")
    streams = [LslStream.of(i) for i in infos]
    if len({(s.source_id, s.hostname, s.name) for s in streams}) > 1:
        raise DeviceError(f"--device {text!r}: {len(streams)} LSL streams match: "
                          + "; ".join(s.describe() for s in streams) + ". Name one of them by its name")
    stream = streams[0]
    if seq is not None and not 0 <= seq < stream.channels:
        raise DeviceError(f"--device {text!r}: seq={seq} is not a channel of the stream's {stream.channels}")
    mapping = parse_map(opts.pop("map", None), query, stream.channels, seq, f"--device {text!r}")
    device = LslDevice("lsl", stream, mapping, seq)
    kw = {"clock": clock} if clock is not None else {}
    return LslLink(device, query, timeout, dejitter, **kw)


# ---- outlets -------------------------------------------------------------------------------------------------
def clock_to_lsl(clock: Callable[[], float]) -> Callable[[float], float]:
    """Hub time -> LSL time (this host's local_clock), for a hub clock that may run `clock.speed` times faster."""
    lsl = pylsl()
    speed = getattr(clock, "speed", 1.0)

    def to_lsl(t: float) -> float:
        return lsl.local_clock() - (clock() - t) / speed

    return to_lsl


class PredictionOutlet:
    """Predictions as an irregular-rate float32 LSL stream (see the module docstring); type 'Classifier'."""

    TYPE = "Classifier"

    def __init__(self, name: str, class_names: tuple[str, ...], modalities: tuple[str, ...],
                 to_lsl: Callable[[float], float], source_id: str | None = None) -> None:
        lsl = pylsl()
        self.class_names, self.modalities, self.to_lsl = tuple(class_names), tuple(modalities), to_lsl
        info = lsl.StreamInfo(name, self.TYPE, len(class_names) + len(modalities), lsl.IRREGULAR_RATE,
                              lsl.cf_float32, source_id or f"crossl-edge:{name}")
        info.set_channel_labels([f"p_{c}" for c in class_names] + [f"present_{m}" for m in modalities])
        info.set_channel_types(["probability"] * len(class_names) + ["presence"] * len(modalities))
        info.desc().append_child_value("producer", "crossl-edge")
        info.desc().append_child_value("time", "LSL time of the end of the window each prediction is about")
        self.outlet = lsl.StreamOutlet(info)
        self.pushed = 0

    def sample(self, p) -> list[float]:
        probs = list(map(float, p.probs)) if p.probs is not None else [float("nan")] * len(self.class_names)
        return probs + [1.0 if m in p.present else 0.0 for m in self.modalities]

    def push(self, p) -> None:
        self.outlet.push_sample(self.sample(p), self.to_lsl(p.t))
        self.pushed += 1


class RawOutlets:
    """The streams the bridge delivers, each re-published as its own LSL stream `<prefix>-<stream>` (float32, the
    device's nominal rate, physical units), every sample stamped with its LSL time. A hub tap (`push`)."""

    def __init__(self, prefix: str, streams: dict[str, StreamInfo], to_lsl: Callable[[float], float]) -> None:
        lsl = pylsl()
        self.to_lsl = to_lsl
        self.outlets = {}
        for s, info in streams.items():
            meta = lsl.StreamInfo(f"{prefix}-{s}", s, info.channels, info.rate, lsl.cf_float32, f"crossl-edge:{prefix}-{s}")
            meta.desc().append_child_value("units", info.units)
            self.outlets[s] = (lsl.StreamOutlet(meta), info.rate)

    def push(self, stream: str, samples: np.ndarray, t0: float) -> None:
        entry = self.outlets.get(stream)
        if entry is None or not len(samples):
            return
        outlet, rate = entry
        start = self.to_lsl(t0)
        outlet.push_chunk(np.ascontiguousarray(samples, np.float32), list(start + np.arange(len(samples)) / rate))
