"""Links: the I/O that carries a device's bytes (a serial port through pyserial, BLE through bleak).

A link owns one device and runs forever as an asyncio task: open, write the device's start commands,
pass every chunk of bytes (with its host arrival time) to the device and the resulting batches to the
hub; when the port or connection fails, tell the hub, wait (exponential backoff with jitter, reset after
a stable connection) and start again. Errors never leave the task except cancellation.

BLE links connect one at a time (a shared lock): BlueZ fails when several devices connect at the same
moment (bleak issues 1036, 1689). A BLE device is looked up by a scan first unless a bleak backend is
given (the simulator's), and its stream is restarted after every reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from firmware_bridge.devices import Batch, Device, DeviceError

log = logging.getLogger(__name__)


class Sink(Protocol):
    """What a link reports to (the hub)."""

    def link_state(self, device: Device, state: str, detail: str = "") -> None: ...

    def deliver(self, device: Device, batches: list[Batch]) -> None: ...


@dataclass
class Backoff:
    first_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 10.0  # connected this long: the next failure starts again from first_s

    def delay(self, attempt: int) -> float:
        base = min(self.first_s * 2 ** max(attempt - 1, 0), self.max_s)
        return base * random.uniform(0.8, 1.2)


def _stamped(batches: list[Batch], wall: float | None = None) -> list[Batch]:
    wall = time.perf_counter() if wall is None else wall
    for b in batches:
        b.wall = wall
    return batches


class Link:
    """Base: the connect / stream / reconnect loop around a transport's open, write, read and close."""

    transport = "link"

    def __init__(self, device: Device, address: str, clock: Callable[[], float] = time.monotonic,
                 backoff: Backoff | None = None) -> None:
        self.device = device
        self.address = address
        self.clock = clock
        self.backoff = backoff or Backoff()
        self.attempts = 0
        self._stop = asyncio.Event()
        self._sink: Sink | None = None
        self._reported = ""

    async def run(self, sink: Sink) -> None:
        self._sink = sink
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            sink.link_state(self.device, "connecting", f"{self.transport} {self.address} (attempt {attempt})")
            self.attempts += 1
            opened_at = None
            try:
                await self.open()
                self.device.connected()
                opened_at = time.monotonic()
                await self.start_device()
                sink.link_state(self.device, "connected", f"{self.transport} {self.address}")
                await self.stream(sink)
                detail = "closed"
            except asyncio.CancelledError:
                await self._close_quietly(sink, opened_at)
                raise
            except (OSError, DeviceError, asyncio.TimeoutError, RuntimeError, ValueError) as e:
                detail = f"{type(e).__name__}: {e}"
            await self._close_quietly(sink, opened_at)
            # "disconnected" ends a connection; a connect that failed is "unavailable" (the sensor is off,
            # out of range or its port is gone)
            sink.link_state(self.device, "disconnected" if opened_at is not None else "unavailable", detail)
            if self._stop.is_set():
                break
            if opened_at is not None and time.monotonic() - opened_at >= self.backoff.stable_s:
                attempt = 0
            delay = self.backoff.delay(max(attempt, 1))
            log.info("%s: %s; reconnecting in %.1f s", self.device.name, detail, delay)
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _close_quietly(self, sink: Sink, opened_at: float | None) -> None:
        if opened_at is not None:
            sink.deliver(self.device, self.device.disconnected(self.clock()))
        try:
            await self.close(opened_at is not None)
        except Exception as e:  # closing a dead link may fail in many transport-specific ways; nothing to save
            log.debug("%s: close failed: %s", self.device.name, e)

    def stop(self) -> None:
        self._stop.set()

    def _feed(self, data: bytes, source: str | None = None) -> list[Batch]:
        """The device's batches for bytes just read (see `_guarded`)."""
        return self._guarded(lambda arrival: self.device.feed(data, arrival, source), f"{len(data)} bytes")

    def _guarded(self, handle: Callable[[float], list[Batch]], what: str) -> list[Batch]:
        """`handle(arrival time)`'s batches; a device that raises (a bug: parsers raise nothing for bad input)
        costs `what` it was handling, counted and logged, never the link or the callback that delivered it."""
        try:
            batches = handle(self.clock())
        except Exception:
            self.device.counters.callback_errors += 1
            log.exception("%s: handling %s failed; they are dropped and the link stays up", self.device.name, what)
            return []
        self._check_diagnosis()
        return _stamped(batches)

    def _check_diagnosis(self) -> None:
        text = self.device.counters.diagnosis
        if text and text != self._reported:
            self._reported = text
            log.warning("%s: %s", self.device.name, text)
            if self._sink is not None:
                self._sink.link_state(self.device, "misconfigured", text)

    async def start_device(self) -> None:
        for target, data in self.device.start_commands():
            await self.write(target, data)
        deadline = time.monotonic() + 5.0
        while not self.device.started():
            if time.monotonic() > deadline:
                raise DeviceError(f"{self.device.name}: no start confirmation within 5 s")
            await asyncio.sleep(0.01)

    # transport-specific
    async def open(self) -> None:
        raise NotImplementedError

    async def write(self, target: str | None, data: bytes) -> None:
        raise NotImplementedError

    async def stream(self, sink: Sink) -> None:
        raise NotImplementedError

    async def close(self, was_open: bool) -> None:
        raise NotImplementedError


class SerialLink(Link):
    """A serial port (USB CDC, Bluetooth RFCOMM such as /dev/rfcomm0, or a pty) through pyserial.

    Reads run in a worker thread with a short timeout, so the event loop (and inference) never waits on
    the port; a port that vanishes raises OSError/SerialException and the link reconnects.
    """

    transport = "serial"
    READ_TIMEOUT_S = 0.05

    def __init__(self, device: Device, port: str, baudrate: int = 115200, **kwargs: Any) -> None:
        super().__init__(device, port, **kwargs)
        self.baudrate = baudrate
        self.serial = None

    async def open(self) -> None:
        import serial  # pyserial

        try:
            self.serial = serial.Serial(self.address, self.baudrate, timeout=self.READ_TIMEOUT_S,
                                        write_timeout=1.0, exclusive=True)
        except serial.SerialException as e:
            raise OSError(str(e)) from e
        self.serial.reset_input_buffer()  # bytes from before this start belong to no stream

    async def write(self, target: str | None, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, data)

    def _write(self, data: bytes) -> None:
        import serial

        try:
            self.serial.write(data)
            self.serial.flush()
        except serial.SerialException as e:
            raise OSError(str(e)) from e

    def _read(self) -> bytes:
        import serial

        try:
            return self.serial.read(max(self.serial.in_waiting, 1))
        except serial.SerialException as e:
            raise OSError(str(e)) from e
        except TypeError as e:  # pyserial raises TypeError when the port is closed under a read
            raise OSError(f"port closed during read: {e}") from e

    async def stream(self, sink: Sink) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            data = await loop.run_in_executor(None, self._read)
            if data:
                sink.deliver(self.device, self._feed(data))

    async def close(self, was_open: bool) -> None:
        if self.serial is None:
            return
        try:
            if was_open and self.serial.is_open:
                for _, data in self.device.stop_commands():
                    self._write(data)
        finally:
            self.serial.close()
            self.serial = None


class BleLink(Link):
    """A BLE peripheral through bleak: scan (by address), connect, subscribe, write commands, notifications."""

    transport = "ble"
    # one connect at a time across all BLE links of an event loop (a lock belongs to the loop it is used in)
    _connect_locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()
    CONNECT_TIMEOUT_S = 20.0
    SCAN_TIMEOUT_S = 10.0

    def __init__(self, device: Device, address: str, backend: type | None = None, **kwargs: Any) -> None:
        super().__init__(device, address, **kwargs)
        self.backend = backend  # a bleak client backend class; None: the platform's (BlueZ on a Pi)
        self.client = None
        self._lost: asyncio.Event | None = None

    @classmethod
    def _lock(cls) -> asyncio.Lock:
        return cls._connect_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())

    async def open(self) -> None:
        from bleak import BleakClient, BleakScanner
        from bleak.exc import BleakError

        self._lost = asyncio.Event()
        lost = self._lost
        async with self._lock():
            try:
                target: Any = self.address
                if self.backend is None:
                    target = await BleakScanner.find_device_by_address(self.address, timeout=self.SCAN_TIMEOUT_S)
                    if target is None:
                        raise OSError(f"{self.address} not found by a {self.SCAN_TIMEOUT_S:.0f} s scan")
                kwargs = {"backend": self.backend} if self.backend is not None else {}
                self.client = BleakClient(target, disconnected_callback=lambda _c: lost.set(),
                                          timeout=self.CONNECT_TIMEOUT_S, **kwargs)
                await self.client.connect()
                for uuid in self.device.notify_uuids():
                    await self.client.start_notify(uuid, self._notified)
            except BleakError as e:
                raise OSError(f"BLE: {e}") from e

    def _notified(self, characteristic: Any, data: bytearray) -> None:
        self._sink.deliver(self.device, self._feed(bytes(data), str(characteristic.uuid)))

    async def write(self, target: str | None, data: bytes) -> None:
        from bleak.exc import BleakError

        try:
            await self.client.write_gatt_char(target, data, response=True)
        except BleakError as e:
            raise OSError(f"BLE write: {e}") from e

    async def stream(self, sink: Sink) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            lost.cancel()
        if self._lost.is_set():
            raise OSError("BLE connection lost")

    async def close(self, was_open: bool) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        try:
            if was_open and client.is_connected:
                for target, data in self.device.stop_commands():
                    await client.write_gatt_char(target, data, response=True)
        finally:
            if client.is_connected:  # also after a start that failed half-way: never leave a stale connection
                await client.disconnect()
