"""A sensor app that publishes over Lab Streaming Layer, replaying real recorded signals (real pylsl outlets).

`LslSensor` publishes one LSL stream: optionally a sample counter as channel 0 (as OpenSignals' nSeq), then the
channels of its signals side by side, float32, at one nominal rate, in real time: every `chunk_s` it pushes the
samples due, each stamped with its own LSL time (the app's clock; `drift_ppm` makes it run fast or slow). It starts
sending when its first consumer connects (as an app a user starts once the recorder listens) and keeps sending from
then on, consumers or not. `vanish(a, b)` closes the outlet from a to b seconds after the start (the app quit, its
host went away) and opens a new one with the same source_id. `sent` counts the samples pushed into an outlet, per
stream, for the rig's ledger; `streaming = False` stops sending (the end of a run). numpy + pylsl, never torch.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter

import numpy as np

from firmware_bridge.lsl import pylsl
from firmware_bridge.simulators.signals import SignalSource

log = logging.getLogger(__name__)


class LslSensor:
    def __init__(self, name: str, kind: str, rate: float, signals: dict[str, SignalSource], counter: bool = False,
                 chunk_s: float = 0.02, drift_ppm: float = 0.0, source_id: str | None = None, keep: bool = False) -> None:
        self.lsl = pylsl()
        self.name, self.kind, self.rate, self.signals, self.counter = name, kind, float(rate), dict(signals), counter
        self.chunk_s, self.drift = chunk_s, drift_ppm * 1e-6
        self.source_id = source_id or f"crossl-sim-{uuid.uuid4().hex[:12]}"
        self.layout = {s: src.channels for s, src in signals.items()}
        self.channels = int(counter) + sum(self.layout.values())
        self.sent: Counter = Counter()
        self.pushed: list[tuple[float, float, int]] = []  # (perf_counter at push, LSL time of its last sample, n)
        self.kept: list[np.ndarray] | None = [] if keep else None  # keep=True: every chunk pushed, as pushed
        self.streaming = True
        self.vanishes: list[tuple[float, float]] = []
        self.vanished_count = 0
        self.outlet = self._open()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self):
        info = self.lsl.StreamInfo(self.name, self.kind, self.channels, self.rate, self.lsl.cf_float32, self.source_id)
        info.set_channel_labels((["nSeq"] if self.counter else [])
                                + [f"{s}{c}" for s, n in self.layout.items() for c in range(n)])
        return self.lsl.StreamOutlet(info)

    @property
    def device_arg(self) -> str:
        """The --device string that reads this sensor into bundle streams named like its signals."""
        first, spec = int(self.counter), []
        for s, n in self.layout.items():
            spec.append(f"{s}:{first}" + (f"-{first + n - 1}" if n > 1 else ""))
            first += n
        return f"lsl:{self.name},map={'+'.join(spec)}" + (",seq=0" if self.counter else "")

    def vanish(self, a: float, b: float) -> "LslSensor":
        self.vanishes.append((a, b))
        return self

    def start(self, wait_for_consumer_s: float = 10.0) -> "LslSensor":
        self._thread = threading.Thread(target=self._loop, args=(wait_for_consumer_s,), name=f"lsl-sim:{self.name}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.outlet = None

    def _loop(self, wait_s: float) -> None:
        try:
            self.outlet.wait_for_consumers(wait_s)
            t0_wall, t0_lsl = time.monotonic(), self.lsl.local_clock()
            index = 0  # samples produced so far (sent or not): the app's clock runs on while its outlet is away
            while not self._stop.is_set():
                elapsed = time.monotonic() - t0_wall
                away = any(a <= elapsed < b for a, b in self.vanishes)
                if away and self.outlet is not None:
                    self.outlet = None  # pylsl closes the outlet when its last reference goes
                    self.vanished_count += 1
                elif not away and self.outlet is None:
                    self.outlet = self._open()
                due = int(elapsed * (1 + self.drift) * self.rate) + 1
                if due > index:
                    x = self._take(due - index)
                    stamps = t0_lsl + (index + np.arange(len(x))) / (self.rate * (1 + self.drift))
                    index = due
                    if self.outlet is not None and self.streaming:
                        self.outlet.push_chunk(x, list(stamps))
                        self.pushed.append((time.perf_counter(), float(stamps[-1]), len(x)))
                        if self.kept is not None:
                            self.kept.append(x)
                        for s in self.layout:
                            self.sent[s] += len(x)
                time.sleep(self.chunk_s)
        except Exception:  # a simulator bug must be loud, not a silent end of the stream
            log.exception("LSL simulator %s died", self.name)
            raise

    def _take(self, n: int) -> np.ndarray:
        parts = [np.asarray(self.signals[s].take(n, self.rate), np.float32) for s in self.layout]
        if self.counter:
            parts.insert(0, (self.sent_total + np.arange(n, dtype=np.float64))[:, None].astype(np.float32))
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

    @property
    def sent_total(self) -> int:
        """Samples pushed so far (the counter channel counts what was sent, as a sender's counter does)."""
        return next(iter(self.sent.values()), 0)
