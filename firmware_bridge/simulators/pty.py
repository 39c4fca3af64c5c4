"""A simulated serial sensor on a real pseudo-terminal pair: pyserial opens it exactly like /dev/rfcomm0.

The sensor model runs in its own thread (like a device on the far end of a cable): it reads the host's
command bytes from the master side, answers them, and writes its frames (after any injected `Faults`)
every `tick_s`. The port has a stable name, a symlink at `path` (as udev's /dev/serial/by-id/ links), that
points at the current /dev/pts/N. Faults in time:
- `stall(a, b)`: between host times a and b the sensor sends nothing, then catches up from its clock;
- `unplug(a, b)`: at a the pty disappears (the host's reads fail), at b a new one appears under the same
  name with the sensor rebooted (it waits for the host's start commands again).
The sensor goes away between frames and a reading host gets up to 0.5 s to take what was sent; bytes
still unread then never reached the host, and the model takes their samples off its `sent` count (found
with FIONREAD), so sent = delivered + counted lost stays exact.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Callable

from firmware_bridge.simulators.sensors import Faults, SensorModel

log = logging.getLogger(__name__)

CLEAN_TAIL_S = 0.1  # host seconds before an unplug in which no byte faults are injected


class PtySimulator:
    def __init__(self, model: SensorModel, path: str | Path, clock: Callable[[], float] = time.monotonic,
                 faults: Faults | None = None, tick_s: float = 0.01) -> None:
        self.model, self.path, self.clock = model, Path(path), clock
        self.faults = faults or Faults()
        self.tick_s = tick_s
        self.stalls: list[tuple[float, float]] = []
        self.unplugs: list[tuple[float, float]] = []
        self.bytes_sent = 0
        self.overflow_bytes = 0  # bytes the host left unread until the pty buffer was full: dropped
        self.unplugged_count = 0  # scheduled unplugs that happened (not the final one at stop)
        self._fds: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def stall(self, a: float, b: float) -> "PtySimulator":
        self.stalls.append((a, b))
        return self

    def unplug(self, a: float, b: float) -> "PtySimulator":
        self.unplugs.append((a, b))
        return self

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass unchanged: no echo, no newline translation
        os.set_blocking(master, False)
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)
        self._fds = (master, slave)
        self.model.power_on(self.clock())

    def _unplug(self, scheduled: bool = True) -> None:
        master, slave = self._fds
        # the sensor goes between two frames; give a reading host up to 0.5 s to take what was already sent
        deadline = time.monotonic() + 0.5
        while True:
            time.sleep(0.02)  # the kernel moves written bytes to the slave side in the background
            unread = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0"))[0]
            if unread == 0 or time.monotonic() > deadline:
                break
        self.model.unsend(unread)
        self.path.unlink(missing_ok=True)
        os.close(master)
        os.close(slave)
        self._fds = None
        self.unplugged_count += scheduled

    def start(self) -> "PtySimulator":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._plug()
        self._thread = threading.Thread(target=self._loop, name=f"pty-sim:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._fds is not None:
            self._unplug(scheduled=False)

    def _within(self, spans: list[tuple[float, float]], now: float) -> bool:
        return any(a <= now < b for a, b in spans)

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                now = self.clock()
                if self._within(self.unplugs, now):
                    if self._fds is not None:
                        self._unplug()
                elif self._fds is None:
                    self._plug()
                if self._fds is not None:
                    self._step(now)
                time.sleep(self.tick_s)
        except Exception:  # a simulator bug must be loud, not a silent end of the stream
            log.exception("pty simulator %s died", self.path)
            raise

    def _step(self, now: float) -> None:
        master, _ = self._fds
        try:
            cmd = os.read(master, 4096)
        except (BlockingIOError, OSError):
            cmd = b""
        if cmd:
            reply = self.model.command(cmd, now)
            if reply:
                self._write(reply)
        if self._within(self.stalls, now):
            return
        # no faults just before an unplug: a frame corrupted there is followed by no frame that could reveal
        # it (a rebooted BITalino restarts its sequence), so no receiver could count it
        clean = any(a - CLEAN_TAIL_S <= now < a for a, _ in self.unplugs)
        for frame in self.model.produce(now):
            self._write(frame if clean else self.faults.apply(frame))

    def _write(self, data: bytes) -> None:
        master, _ = self._fds
        view = memoryview(data)
        deadline = time.monotonic() + 0.05
        while view:
            try:
                n = os.write(master, view)
            except BlockingIOError:
                if time.monotonic() > deadline:  # nobody reads: the device's buffer overflows, as a real one's
                    self.overflow_bytes += len(view)
                    return
                time.sleep(0.001)
                continue
            view = view[n:]
            self.bytes_sent += n
