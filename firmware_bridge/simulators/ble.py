"""Simulated BLE peripherals behind the real bleak API: a bleak client backend, not a mock of BleakClient.

`SimulatedBleBackend` subclasses bleak's `BaseBleakClient`; the link creates a real `bleak.BleakClient`
with `backend=SimulatedBleBackend`, so characteristic lookup by UUID, callback wrapping and the
disconnected callback all run through bleak's own code. Behind it, a `BlePeripheral` (registered by
address) owns a GATT table with the device's real UUIDs and a sensor model, answers writes (Polar
answers on its control point by indication), and delivers the exact notification bytes the device would:
BITalino BLE frames cut into notifications of at most 20 bytes, Polar PMD data frames, CXF over the
Nordic UART TX characteristic.

Faults: `out_of_range(a, b)` drops the connection at host time a (the disconnected callback fires, as
BlueZ's does) and refuses connections until b, when the sensor is back, rebooted; byte `Faults` may
corrupt notification payloads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakDeviceNotFoundError, BleakError

from firmware_bridge.devices import (BITALINO_BLE_COMMANDS, BITALINO_BLE_FRAMES, BITALINO_BLE_SERVICE,
                                     NORDIC_UART_RX, NORDIC_UART_SERVICE, NORDIC_UART_TX)
from firmware_bridge.protocols import polar
from firmware_bridge.simulators.sensors import Faults, SensorModel

log = logging.getLogger(__name__)

PERIPHERALS: dict[str, "BlePeripheral"] = {}  # address (lower case) -> peripheral in range


class BlePeripheral:
    """A sensor model behind a GATT table; `attach` it to the running loop with `start`."""

    def __init__(self, address: str, name: str, model: SensorModel, gatt: dict[str, dict[str, list[str]]],
                 notify_mtu: int = 244, clock: Callable[[], float] = time.monotonic, faults: Faults | None = None,
                 tick_s: float = 0.01, pack: bool = False) -> None:
        self.address, self.name, self.model = address, name, model
        self.pack = pack  # the data characteristic carries a byte stream: fill notifications, frames span them
        self._tx = bytearray()
        self.gatt = gatt  # service uuid -> {characteristic uuid: properties}
        self.notify_mtu = notify_mtu
        self.clock, self.faults, self.tick_s = clock, faults or Faults(), tick_s
        self.absent: list[tuple[float, float]] = []
        self.connection: SimulatedBleBackend | None = None
        self.drops = 0
        self._task: asyncio.Task | None = None
        self._data_uuid = next(u for chars in gatt.values() for u, props in chars.items() if "notify" in props)

    def out_of_range(self, a: float, b: float) -> "BlePeripheral":
        self.absent.append((a, b))
        return self

    def in_range(self, now: float) -> bool:
        return not any(a <= now < b for a, b in self.absent)

    def start(self) -> "BlePeripheral":
        PERIPHERALS[self.address.lower()] = self
        self.model.power_on(self.clock())
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ble-sim:{self.name}")
        return self

    async def stop(self) -> None:
        PERIPHERALS.pop(self.address.lower(), None)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        was_in_range = True
        while True:
            now = self.clock()
            here = self.in_range(now)
            if not here and self.connection is not None:
                self.drops += 1
                conn, self.connection = self.connection, None
                conn._lost()
            if here and not was_in_range:
                self.model.power_on(now)  # back in range after a power cycle: idle until started again
            was_in_range = here
            if self.connection is not None:
                frames = [self.faults.apply(frame) for frame in self.model.produce(now)]
                if self.pack:
                    # a byte-stream device fills whole notifications; a part-filled one waits for the next
                    # tick unless the sensor has stopped
                    self._tx += b"".join(frames)
                    cut = len(self._tx) if not self.model.streaming else len(self._tx) - len(self._tx) % self.notify_mtu
                    frames, self._tx = [bytes(self._tx[:cut])], self._tx[cut:]
                for data in frames:  # otherwise one frame is one notification (Polar PMD)
                    if data:
                        self.connection._notify(self._data_uuid, data)
            elif self._tx:  # the link went with what was queued on the device: it never left
                self.model.unsend(len(self._tx))
                self._tx.clear()
            await asyncio.sleep(self.tick_s)

    def write(self, uuid: str, data: bytes) -> None:
        reply = self.model.command(bytes(data), self.clock(), uuid)
        if reply and self.connection is not None:
            self.connection._notify(uuid, reply)  # the answer comes back as an indication on the same characteristic

    def chunk(self, uuid: str, data: bytes) -> list[bytes]:
        size = self.notify_mtu
        return [data[i:i + size] for i in range(0, len(data), size)]


def bitalino_peripheral(address: str, model: SensorModel, **kwargs: Any) -> BlePeripheral:
    gatt = {BITALINO_BLE_SERVICE: {BITALINO_BLE_COMMANDS: ["write", "write-without-response"],
                                   BITALINO_BLE_FRAMES: ["notify"]}}
    return BlePeripheral(address, "BITalino BLE", model, gatt, notify_mtu=20, pack=True, **kwargs)


def polar_peripheral(address: str, model: SensorModel, **kwargs: Any) -> BlePeripheral:
    gatt = {polar.SERVICE: {polar.DATA: ["notify"], polar.CONTROL_POINT: ["read", "write", "indicate"]}}
    return BlePeripheral(address, "Polar H10", model, gatt, **kwargs)


def nus_peripheral(address: str, model: SensorModel, **kwargs: Any) -> BlePeripheral:
    gatt = {NORDIC_UART_SERVICE: {NORDIC_UART_TX: ["notify"], NORDIC_UART_RX: ["write", "write-without-response"]}}
    return BlePeripheral(address, "CXF board (Nordic UART)", model, gatt, pack=True, **kwargs)


class SimulatedBleBackend(BaseBleakClient):
    """bleak client backend that talks to the registered `BlePeripheral` of the address."""

    def __init__(self, address_or_ble_device: Any, **kwargs: Any) -> None:
        super().__init__(address_or_ble_device, **kwargs)
        self.peripheral: BlePeripheral | None = None
        self._callbacks: dict[int, Callable[[bytearray], None]] = {}
        self._chars: dict[str, BleakGATTCharacteristic] = {}

    @property
    def name(self) -> str:
        return self.peripheral.name if self.peripheral else self.address

    @property
    def mtu_size(self) -> int:
        return (self.peripheral.notify_mtu + 3) if self.peripheral else 23

    @property
    def is_connected(self) -> bool:
        return self.peripheral is not None and self.peripheral.connection is self

    connecting = 0  # connects in progress, all simulated peripherals together
    max_connecting = 0  # the most seen at once (BlueZ fails when several connect at the same moment)

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        cls = SimulatedBleBackend
        cls.connecting += 1
        cls.max_connecting = max(cls.max_connecting, cls.connecting)
        try:
            await asyncio.sleep(0.05)  # a connection takes time; other tasks run meanwhile
        finally:
            cls.connecting -= 1
        p = PERIPHERALS.get(self.address.lower())
        if p is None or not p.in_range(p.clock()):
            raise BleakDeviceNotFoundError(self.address, f"Device with address {self.address} was not found.")
        if p.connection is not None:
            raise BleakError(f"{self.address} is already connected to another central")
        self.services = self._build_services(p)
        self.peripheral = p
        p.connection = self

    def _build_services(self, p: BlePeripheral) -> BleakGATTServiceCollection:
        services = BleakGATTServiceCollection()
        handle = 1
        for s_uuid, chars in p.gatt.items():
            service = BleakGATTService(None, handle, s_uuid)
            services.add_service(service)
            for c_uuid, props in chars.items():
                handle += 2
                char = BleakGATTCharacteristic(None, handle, c_uuid, props, lambda: 20, service)
                services.add_characteristic(char)
                self._chars[c_uuid] = char
            handle += 1
        return services

    async def disconnect(self) -> None:
        p, self.peripheral = self.peripheral, None
        if p is not None and p.connection is self:
            p.connection = None
            p.model.streaming = False  # the sensor stops when its central leaves
        self._callbacks.clear()

    def _lost(self) -> None:
        """The peripheral went away: bleak calls the disconnected callback, as on a real link loss."""
        self.peripheral = None
        self._callbacks.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    def _notify(self, uuid: str, data: bytes) -> None:
        char = self._chars.get(uuid)
        cb = self._callbacks.get(char.handle) if char is not None else None
        if cb is None:  # nobody subscribed: a real peripheral sends nothing either
            return
        for part in self.peripheral.chunk(uuid, data) if self.peripheral else []:
            cb(bytearray(part))

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        pass

    async def unpair(self) -> None:
        pass

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, **kwargs: Any) -> bytearray:
        if not self.is_connected:
            raise BleakError("Not connected")
        if characteristic.uuid == polar.CONTROL_POINT:
            return bytearray([0x0F, 0b101])  # features: ECG and ACC
        return bytearray()

    async def read_gatt_descriptor(self, desc: Any, **kwargs: Any) -> bytearray:
        raise BleakError("no descriptors in the simulated GATT table")

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data: Any, response: bool) -> None:
        if not self.is_connected:
            raise BleakError("Not connected")
        if not {"write", "write-without-response"} & set(characteristic.properties):
            raise BleakError(f"characteristic {characteristic.uuid} is not writable")
        self.peripheral.write(characteristic.uuid, bytes(data))

    async def write_gatt_descriptor(self, desc: Any, data: Any) -> None:
        raise BleakError("no descriptors in the simulated GATT table")

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: Callable[[bytearray], None],
                           **kwargs: Any) -> None:
        if not {"notify", "indicate"} & set(characteristic.properties):
            raise BleakError(f"characteristic {characteristic.uuid} does not notify")
        self._callbacks[characteristic.handle] = callback

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._callbacks.pop(characteristic.handle, None)
