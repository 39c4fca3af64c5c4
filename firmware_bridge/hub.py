"""The hub: several devices at once, their samples into the runtime's streaming classifier.

Every link runs as its own asyncio task (`firmware_bridge.links`); the hub gets their batches and state
changes. For each batch it resamples the stream to the rate of the bundle's modality of the same name
(streams the bundle does not use are counted, optionally recorded, and otherwise ignored), pushes it to
the `StreamingClassifier`, and asks for the predictions whose windows are now complete: the classifier is
polled up to the oldest newest-sample time among the live streams, so one slow or jittery device never
gets its window cut short, and a stalled one stops holding the others back after `absent_after_s`.

Presence: the hub reports `connecting`, `connected`, `stalled` (connected, no samples for `stall_after_s`),
`resumed` and `disconnected` per device, and tells the classifier at once when a device's link drops, so
its encoders are skipped from the next prediction on.

Latency: for each prediction, the wall time (perf_counter, whatever the hub's clock) from the link's read
of the frame that completed the last window it uses to the moment the prediction is handed on
(`latencies_s`): parsing, resampling and inference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import numpy as np

from firmware_bridge.devices import Batch, Device
from firmware_bridge.links import Link
from firmware_bridge.recorder import Recorder
from firmware_bridge.resample import Resampler

log = logging.getLogger(__name__)


@dataclass
class Event:
    t: float  # host time
    device: str
    state: str
    detail: str = ""


@dataclass
class _StreamState:
    device: Device
    resampler: Resampler | None  # None: the bundle does not use this stream
    last_arrival: float | None = None
    stalled: bool = False
    arrivals: deque = field(default_factory=lambda: deque(maxlen=4096))  # (t_end of pushed samples, wall read time)


class Hub:
    def __init__(self, links: list[Link], classifier=None, recorder: Recorder | None = None,
                 clock: Callable[[], float] = time.monotonic, stall_after_s: float = 2.0,
                 on_prediction: Callable | None = None, on_event: Callable[[Event], None] | None = None,
                 rotate_s: float = 300.0, taps: list | None = None) -> None:
        """taps: objects with push(stream, samples, t0) that get every batch as its device delivered it (its
        rate, before resampling), e.g. firmware_bridge.lsl.RawOutlets."""
        self.links = links
        self.classifier = classifier
        self.recorder = recorder
        self.clock = clock
        self.stall_after_s = stall_after_s
        self.on_prediction = on_prediction
        self.on_event = on_event
        self.rotate_s = rotate_s
        self.taps = list(taps or [])
        self.events: list[Event] = []
        self.states: dict[str, str] = {}
        self.latencies_s: list[float] = []
        self.streams: dict[str, _StreamState] = {}
        self.unused: set[str] = set()
        specs = {s.name: s for s in classifier.model.manifest.specs} if classifier is not None else {}
        for link in links:
            for name, info in link.device.streams.items():
                if name in self.streams:
                    raise ValueError(f"stream {name!r} comes from two devices ({self.streams[name].device.name} and "
                                     f"{link.device.name}); give each a distinct name")
                spec = specs.get(name)
                if spec is not None and spec.channels != info.channels:
                    raise ValueError(f"{link.device.name}: stream {name!r} has {info.channels} channels; the bundle's "
                                     f"{name} has {spec.channels}")
                if spec is None and classifier is not None:
                    self.unused.add(name)
                    log.warning("stream %r of %s is not a modality of the bundle (%s): counted and recorded only",
                                name, link.device.name, ", ".join(specs))
                # arrival jitter, and so the clock fit's steps, grow with a simulation's speed
                resampler = Resampler(info.rate, spec.sample_rate, 0.05 * getattr(clock, "speed", 1.0)) if spec else None
                self.streams[name] = _StreamState(link.device, resampler)
        self._last_rotate = None

    # ---- from the links ------------------------------------------------------------------------------
    def link_state(self, device: Device, state: str, detail: str = "") -> None:
        self._event(device.name, state, detail)
        if state == "disconnected" and self.classifier is not None:
            for name, st in self.streams.items():
                if st.device is device and st.resampler is not None:
                    self.classifier.set_connected(name, False)
        if state in ("connected", "disconnected"):
            for st in self.streams.values():
                if st.device is device:
                    st.stalled, st.last_arrival = False, None

    def deliver(self, device: Device, batches: list[Batch]) -> None:
        for b in batches:
            st = self.streams[b.stream]
            st.last_arrival = b.arrival
            for tap in self.taps:
                tap.push(b.stream, b.samples, b.t0)
            if st.stalled:
                st.stalled = False
                self._event(device.name, "resumed", b.stream)
            if st.resampler is None:
                if self.recorder is not None:
                    self.recorder.push(b.stream, b.samples, b.t0)
                continue
            y, t0 = st.resampler.push(b.samples, b.t0, b.contiguous)
            if len(y) == 0:
                continue
            if self.recorder is not None:
                self.recorder.push(b.stream, y, t0)
            if self.classifier is not None:
                self.classifier.push(b.stream, y, t0)
                st.arrivals.append((t0 + len(y) / st.resampler.rate_out, b.wall))
        if batches:
            self._predict(self.clock())

    # ---- predictions ---------------------------------------------------------------------------------
    def _ready(self, now: float) -> float | None:
        """Stream time up to which every live stream has its samples."""
        c = self.classifier
        ends = []
        for name, st in self.streams.items():
            if st.resampler is None or st.last_arrival is None or now - st.last_arrival > c.absent_after_s:
                continue
            ch = c.channels[name]
            if ch.connected and ch.t0 is not None:
                ends.append(ch.t_next)
        return min(ends) if ends else None

    def _predict(self, now: float) -> None:
        if self.classifier is None:
            return
        ready = self._ready(now)
        floor = now - self.classifier.absent_after_s  # nothing live: predictions (no_modality) go on
        for p in self.classifier.poll(max(ready, floor) if ready is not None else floor):
            done = time.perf_counter()
            arrived = [self._arrival(name, p.t) for name in p.present]
            arrived = [a for a in arrived if a is not None]
            if arrived:
                self.latencies_s.append(max(done - max(arrived), 0.0))
            if self.on_prediction is not None:
                self.on_prediction(p)

    def _arrival(self, name: str, t: float) -> float | None:
        """When the link read the bytes of the pushed samples that hold stream time t (perf_counter).

        Pushes are in time order and a prediction is about the newest ones: walk back from the newest."""
        found = None
        for t_end, arrival in reversed(self.streams[name].arrivals):
            if t_end < t - 1e-6:
                break
            found = arrival
        return found

    # ---- presence ------------------------------------------------------------------------------------
    def _event(self, device: str, state: str, detail: str = "") -> None:
        ev = Event(self.clock(), device, state, detail)
        self.events.append(ev)
        self.states[device] = state
        log.info("%s: %s%s", device, state, f" ({detail})" if detail else "")
        if self.on_event is not None:
            self.on_event(ev)

    def check(self) -> None:
        """Stalls, predictions while nothing arrives, and recording rotation; the monitor calls it."""
        now = self.clock()
        for name, st in self.streams.items():
            if st.last_arrival is not None and not st.stalled and now - st.last_arrival > self.stall_after_s:
                st.stalled = True
                self._event(st.device.name, "stalled", f"{name}: no samples for {now - st.last_arrival:.1f} s")
        self._predict(now)
        if self.recorder is not None:
            if self._last_rotate is None:
                self._last_rotate = now
            elif now - self._last_rotate >= self.rotate_s:
                self.recorder.flush(now - self.classifier.absent_after_s if self.classifier else now - 2.0)
                self._last_rotate = now

    async def run(self, duration_s: float | None = None, tick_s: float = 0.1,
                  before_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        """Run every link and the monitor until cancelled or for duration_s of hub clock time; `before_stop` is
        awaited (with the links still open) before they close."""
        tasks = [asyncio.create_task(link.run(self), name=f"link:{link.device.name}") for link in self.links]
        start = self.clock()
        self._stopping = False
        try:
            while (duration_s is None or self.clock() - start < duration_s) and not self._stopping:
                await asyncio.sleep(tick_s)
                self.check()
                for t in tasks:
                    if t.done() and not t.cancelled() and t.exception() is not None:
                        raise t.exception()
            if before_stop is not None:
                await before_stop()
        finally:
            for link in self.links:
                link.stop()
            # let each link finish its current read (a serial read times out within 50 ms) and close cleanly,
            # so bytes already read are delivered; cancel only a link that does not stop
            done, pending = await asyncio.wait(tasks, timeout=2.0) if tasks else (set(), set())
            for t in pending:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.recorder is not None:
                self.recorder.flush()

    def stop(self) -> None:
        """Ask `run` to end at its next tick, as if its duration were over (callable from a callback)."""
        self._stopping = True

    # ---- accounting ----------------------------------------------------------------------------------
    def summary(self) -> dict:
        lat = np.asarray(self.latencies_s) * 1e3
        out = {
            "devices": {link.device.name: dict(link.device.counters.to_dict(), state=self.states.get(link.device.name),
                                               attempts=link.attempts) for link in self.links},
            "predictions": self.classifier.counters.predictions if self.classifier is not None else 0,
            "events": len(self.events),
            "unused_streams": sorted(self.unused),
        }
        if len(lat):
            out["latency_ms"] = {"n": int(len(lat)), "median": float(np.median(lat)), "p99": float(np.percentile(lat, 99)),
                                 "max": float(lat.max())}
        if self.classifier is not None:
            out["stream"] = self.classifier.counters.to_dict()
        if self.recorder is not None:
            out["recorder"] = dict(self.recorder.counters.__dict__)
        return out
