"""Ready-made simulated rigs: sensor models + their pty or BLE stand-ins + the matching devices and links.

`bundle_rig` gives a bundle every modality it needs from a held-out subject of its own data set, each
through the kind of sensor that would carry it: ACC (and ECG, at 130 Hz) from a Polar H10 over BLE, EMG and EDA from a
BITalino over a serial port, anything else (BVP, temperature, gyroscope...) from a CXF board over a
serial port; `lsl_rig` publishes them over Lab Streaming Layer instead. `soak_rig` is the issue's soak set:
BITalino EMG at 1 kHz (serial), Polar ACC at 100 Hz (BLE) and a CXF board with EDA at 10 Hz (serial). `ledger()` compares what every sensor model sent with
what its device delivered and counted as lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from firmware_bridge.config import parse_devices
from firmware_bridge.links import Backoff, Link
from firmware_bridge.simulators.ble import BlePeripheral, SimulatedBleBackend, polar_peripheral
from firmware_bridge.simulators.pty import PtySimulator
from firmware_bridge.simulators.sensors import (BitalinoModel, CxfModel, DeviceClock, Faults, PolarModel,
                                                SensorModel, bitalino_adc_eda, bitalino_adc_emg)
from firmware_bridge.simulators.signals import SignalSource, dataset_signal, dataset_signals

POLAR_ADDRESS = "A0:9E:1A:00:00:01"  # Polar's OUI; the rest is made up


@dataclass
class Rig:
    ptys: list[PtySimulator] = field(default_factory=list)
    peripherals: list[BlePeripheral] = field(default_factory=list)
    models: dict[str, tuple[SensorModel, dict]] = field(default_factory=dict)  # device name -> model, stream -> sent key
    device_args: list[str] = field(default_factory=list)  # the --device arguments that reach these sensors
    links: list[Link] = field(default_factory=list)
    lsl: list = field(default_factory=list)  # LslSensor apps (firmware_bridge.simulators.lsl)

    def connect(self, clock: Callable[[], float] = time.monotonic) -> list[Link]:
        """Links to the simulated sensors, made from `device_args` exactly as `--device` makes them."""
        self.links = parse_devices(self.device_args, clock, backend=SimulatedBleBackend)
        speed = getattr(clock, "speed", 1.0)
        for link in self.links:
            # simulated sensors come back at once: a short backoff (in wall seconds, so scaled by the
            # simulation's speed) keeps reconnect attempts a small part of an outage
            link.backoff = Backoff(first_s=0.5 / speed, max_s=4.0 / speed, stable_s=10.0 / speed)
        return self.links

    def start(self) -> "Rig":
        """Start every simulator (call inside the running event loop: BLE peripherals are tasks)."""
        for p in self.ptys:
            p.start()
        for p in self.peripherals:
            p.start()
        for p in self.lsl:
            p.start()
        return self

    async def stop(self) -> None:
        for p in [*self.ptys, *self.lsl]:
            p.stop()
        for p in self.peripherals:
            await p.stop()

    async def quiesce(self, clean_s: float = 0.1, drain_s: float = 0.3) -> None:
        """End the streams so that sent = delivered + lost holds to the last sample: byte faults stop, clean
        frames flow for clean_s (a corrupted last frame is followed by nothing that could reveal it, to any
        receiver), every sensor stops sending, and the host gets drain_s to read what was sent (wall seconds).
        Call it before the hub stops."""
        for sim in [*self.ptys, *self.peripherals]:
            sim.faults = Faults()
        await asyncio.sleep(clean_s)
        for model, _ in self.models.values():
            model.streaming = False
        await asyncio.sleep(drain_s)

    def ledger(self) -> dict[str, dict]:
        """Per device: samples sent (by the sensor model), delivered and counted lost; balanced when equal."""
        out = {}
        for link in self.links:
            device = link.device
            model, keys = self.models[device.name]
            sent = sum(model.sent[k] for k in keys.values())
            delivered = sum(device.counters.delivered[s] for s in keys)
            lost = sum(device.counters.lost.values())
            out[device.name] = {"sent": int(sent), "delivered": int(delivered), "lost": int(lost),
                                "balanced": sent == delivered + lost}
        return out


def _add_bitalino(rig: Rig, folder: Path, clock, channels: dict[int, tuple[str, str, SignalSource]], rate: int,
                  faults: Faults | None, drift_ppm: float) -> PtySimulator:
    model = BitalinoModel({a: src for a, (_, _, src) in channels.items()}, DeviceClock(drift_ppm))
    pty = PtySimulator(model, folder / "bitalino", clock, faults)
    rig.ptys.append(pty)
    rig.models["bitalino"] = (model, {name: f"A{a}" for a, (name, _, _) in channels.items()})
    spec = ",".join(f"A{a}={name}:{kind}" for a, (name, kind, _) in channels.items())
    rig.device_args.append(f"bitalino:{pty.path},rate={rate},{spec}")
    return pty


def _add_polar(rig: Rig, clock, acc: SignalSource | None, rate: int, drift_ppm: float,
               ecg: tuple[str, SignalSource] | None = None) -> BlePeripheral:
    """A Polar H10 with ACC at `rate` (None: no ACC stream) and/or ECG at 130 Hz (stream name, source in mV)."""
    model = PolarModel(acc if acc is not None else SignalSource(np.zeros((2, 3)), 1.0), DeviceClock(drift_ppm),
                       ecg=ecg[1] if ecg else None)
    per = polar_peripheral(POLAR_ADDRESS, model, clock=clock)
    rig.peripherals.append(per)
    rig.models["polar"] = (model, {**({"acc": "acc"} if acc is not None else {}), **({ecg[0]: "ecg"} if ecg else {})})
    rig.device_args.append(f"polar:{POLAR_ADDRESS},acc={rate if acc is not None else 0}" + (f",ecg={ecg[0]}" if ecg else ""))
    return per


def _add_cxf(rig: Rig, folder: Path, clock, streams: dict[int, tuple[str, SignalSource, float]],
             faults: Faults | None, drift_ppm: float) -> PtySimulator:
    model = CxfModel({mid: (src, rate) for mid, (_, src, rate) in streams.items()}, clock=DeviceClock(drift_ppm))
    pty = PtySimulator(model, folder / "cxf-board", clock, faults)
    rig.ptys.append(pty)
    rig.models["cxf"] = (model, {name: mid for mid, (name, _, _) in streams.items()})
    spec = ",".join(f"{mid}={name}:{src.channels}@{rate:g}" for mid, (name, src, rate) in streams.items())
    rig.device_args.append(f"cxf:{pty.path},{spec}")
    return pty


def add_misconfigured_bitalino(rig: Rig, folder: str | Path, clock, source: SignalSource) -> None:
    """A BITalino streaming A1-A3 at 1 kHz to a host configured for six channels (a user's mistake): its bytes
    are no frames of what the host expects, and the bridge must say so without holding the other links back.
    It has no ledger entry: nothing it sends can be delivered."""
    model = BitalinoModel({a: source for a in (1, 2, 3)}, fixed_inputs=(1, 2, 3))
    pty = PtySimulator(model, Path(folder) / "bitalino-misconfigured", clock)
    rig.ptys.append(pty)
    rig.models["bitalino2"] = (model, {})
    rig.device_args.append(f"bitalino:{pty.path},rate=1000," + ",".join(f"A{a}=wrong{a}:raw" for a in range(1, 7)))


def lis_emg_mv(data_root=None, key: str = "2020-07-09") -> SignalSource:
    """LIS EMG channel 1 (Myo, 8-bit raw at 200 Hz), scaled to +-1 mV: the simulated BITalino's EMG."""
    src = dataset_signal("lis-emg-imu", key, "emg", data_root)
    return SignalSource(src.data[:, :1] / 128.0, src.rate, name=src.name + ":ch1 (raw/128 as mV)")


def soak_rig(folder: str | Path, clock: Callable[[], float] = time.monotonic, data_root=None,
             subject: str = "S04", faults: bool = True, seed: int = 0) -> Rig:
    folder = Path(folder)
    rig = Rig()
    emg = lis_emg_mv(data_root)
    emg.transform = bitalino_adc_emg
    signals = dataset_signals("stress-predict", subject, ["eda", "acc"], data_root)
    eda, acc = signals["eda"], signals["acc"]
    byte_faults = Faults(flip=0.02, drop=0.02, dup=0.02, seed=seed) if faults else None
    _add_bitalino(rig, folder, clock, {1: ("emg", "emg", emg)}, 1000, byte_faults, drift_ppm=40)
    _add_polar(rig, clock, acc, 100, drift_ppm=-25)
    cxf_faults = Faults(flip=0.01, drop=0.01, dup=0.01, seed=seed + 1) if faults else None
    _add_cxf(rig, folder, clock, {3: ("eda", eda, 10.0)}, cxf_faults, drift_ppm=15)
    return rig


def lsl_rig(manifest, data_root=None, subject: str | None = None, start_s: float = 0.0, keep: bool = False) -> Rig:
    """Sensor apps publishing a bundle's modalities over LSL, replaying a held-out subject of its data set: one
    stream per sample rate (as an Empatica E4's streaming server gives ACC, BVP, EDA...), the modalities of one
    rate side by side in one stream after a sample counter (nSeq), a modality alone at its rate without one.
    Stream names are made unique, so runs beside each other never read each other's streams."""
    from firmware_bridge.simulators.lsl import LslSensor

    dataset, subject = _held_out(manifest, subject)
    signals = dataset_signals(dataset, subject, [spec.name for spec in manifest.specs], data_root)
    by_rate: dict[float, list[str]] = {}
    for spec in manifest.specs:
        signals[spec.name].seek(start_s)
        by_rate.setdefault(spec.sample_rate, []).append(spec.name)
    rig, tag = Rig(), uuid.uuid4().hex[:8]
    for rate, names in by_rate.items():
        sensor = LslSensor(f"sim-{'-'.join(names)}-{tag}", names[0].upper(), rate, {n: signals[n] for n in names},
                           counter=len(names) > 1, keep=keep)
        rig.lsl.append(sensor)
        rig.models[f"lsl{len(rig.lsl) if len(rig.lsl) > 1 else ''}"] = (sensor, {n: n for n in names})
        rig.device_args.append(sensor.device_arg)
    return rig


def _held_out(manifest, subject: str | None) -> tuple[str, str]:
    """The bundle's data set and the subject to replay (default: its first held-out test subject)."""
    source = manifest.raw.get("source", {})
    dataset = source.get("dataset")
    if dataset is None:
        raise ValueError("the bundle's manifest names no data set to simulate its sensors from")
    subject = subject or (source.get("test_subjects") or [None])[0]
    if subject is None:
        raise ValueError("the bundle's manifest names no held-out subject; pass one")
    return dataset, subject


def bundle_rig(manifest, folder: str | Path, clock: Callable[[], float] = time.monotonic, data_root=None,
               subject: str | None = None, start_s: float = 0.0) -> Rig:
    """Sensors for every modality of a bundle, replaying a held-out subject of the bundle's data set from
    `start_s` seconds into its recording."""
    folder = Path(folder)
    dataset, subject = _held_out(manifest, subject)
    rig = Rig()
    bita: dict[int, tuple[str, str, SignalSource]] = {}
    boards: dict[int, tuple[str, SignalSource, float]] = {}
    signals = dataset_signals(dataset, subject, [spec.name for spec in manifest.specs], data_root)
    acc = ecg = None
    for spec in manifest.specs:
        src = signals[spec.name]
        src.seek(start_s)
        if spec.kind == "acc" and spec.channels == 3 and acc is None:
            acc = src
        elif spec.kind == "ecg" and spec.channels == 1 and ecg is None:
            ecg = (spec.name, src)  # an H10's ECG at 130 Hz, in mV
        elif spec.kind in ("eda", "emg") and spec.channels == 1:
            src.transform = bitalino_adc_eda if spec.kind == "eda" else bitalino_adc_emg
            bita[3 if spec.kind == "eda" else 1] = (spec.name, spec.kind, src)
        else:
            boards[len(boards) + 1] = (spec.name, src, spec.sample_rate)
    if acc is not None or ecg is not None:
        _add_polar(rig, clock, acc, 50, drift_ppm=-25, ecg=ecg)
    if bita:
        _add_bitalino(rig, folder, clock, bita, 1000 if any(k == "emg" for _, k, _ in bita.values()) else 10, None, 30)
    if boards:
        _add_cxf(rig, folder, clock, boards, None, drift_ppm=-10)
    return rig


