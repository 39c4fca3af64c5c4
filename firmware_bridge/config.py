"""`--device` strings -> devices and links. The syntax (also in the README):

    bitalino:<port>[,rate=HZ][,A<n>=<stream>:<sensor>]...      BITalino over Bluetooth serial / USB, e.g.
        bitalino:/dev/rfcomm0,rate=1000,A1=emg:emg,A3=eda:eda   (sensor: emg, eda, acc or raw; rate 1/10/100/1000)
    bitalino-ble:<address>[,...same...]                          BITalino BLE (BT121)
    polar:<address>[,acc=HZ][,ecg=<stream>]                      Polar H10 PMD; ACC (25/50/100/200 Hz) as stream "acc"
    cxf:<port>[,baud=N],<id>=<stream>:<channels>@<rate>[*<scale>]...   a CXF board (FRAME_FORMAT.md) over serial
    cxf-ble:<address>,<id>=<stream>:<channels>@<rate>[*<scale>]...     a CXF board over BLE (Nordic UART)
    lsl:<stream name or type>[,map=<stream>:<channels>[+...]][,seq=<channel>][,dejitter=1][,timeout=<s>]
                                                                 a Lab Streaming Layer stream (firmware_bridge/lsl.py)

Addresses may hold colons (BLE MACs); options are comma-separated after them. A stream's name is the
bundle modality it feeds (e.g. eda); other names are counted and recorded only.
"""

from __future__ import annotations

import re

from firmware_bridge.devices import BitalinoDevice, CxfDevice, DeviceError, PolarDevice, StreamInfo
from firmware_bridge.links import BleLink, Link, SerialLink

KINDS = ("bitalino", "bitalino-ble", "polar", "cxf", "cxf-ble", "lsl")
_CXF_STREAM = re.compile(r"^(?P<name>[a-z0-9_]+):(?P<channels>\d+)@(?P<rate>[0-9.]+)(?:\*(?P<scale>[-0-9.eE+]+))?$")


def parse_device(text: str, clock=None, backend: type | None = None) -> Link:
    """One --device string -> a link (with its device); DeviceError says what is wrong and how it should look."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS or not rest:
        raise DeviceError(f"--device {text!r}: expected <kind>:<address>[,options], kind one of {', '.join(KINDS)} "
                          "(e.g. bitalino:/dev/rfcomm0,A1=emg:emg or polar:A0:9E:1A:12:34:56)")
    address, *options = rest.split(",")
    opts: dict[str, str] = {}
    for o in options:
        key, eq, value = o.partition("=")
        if not eq or not key or not value:
            raise DeviceError(f"--device {text!r}: option {o!r} is not key=value")
        opts[key] = value
    name = kind.split("-")[0]
    if name == "lsl":  # resolved now: its channels and rate fix the streams it feeds
        from firmware_bridge.lsl import lsl_link

        link = lsl_link(text, address, opts, clock)
        if opts:
            raise DeviceError(f"--device {text!r}: unknown options {', '.join(sorted(opts))} for lsl; known: map, "
                              "seq, dejitter, timeout")
        return link
    kw = {"clock": clock} if clock is not None else {}
    ble = kind.endswith("-ble") or kind == "polar"
    try:
        if name == "bitalino":
            rate = int(opts.pop("rate", "1000"))
            channels = {}
            for key in list(opts):
                if re.fullmatch(r"A[1-6]", key):
                    stream, _, sensor = opts.pop(key).partition(":")
                    channels[int(key[1])] = (stream, sensor or "raw")
            device = BitalinoDevice(name, channels or {1: ("emg", "emg")}, rate, ble=ble)
        elif name == "polar":
            acc = opts.pop("acc", "100")
            ecg = opts.pop("ecg", None)
            device = PolarDevice(name, acc="acc" if acc != "0" else None, ecg=ecg, acc_rate=int(acc) if acc != "0" else 100)
        else:
            baud = int(opts.pop("baud", "115200"))
            streams = {}
            for key in [k for k in opts if k.isdigit()]:
                m = _CXF_STREAM.match(opts.pop(key))
                if m is None:
                    raise DeviceError(f"--device {text!r}: {key}=... must be <stream>:<channels>@<rate>[*<scale>]")
                streams[int(key)] = (StreamInfo(m["name"], int(m["channels"]), float(m["rate"]), ""),
                                     float(m["scale"] or 1.0))
            device = CxfDevice(name, streams, ble=ble)
    except ValueError as e:
        if isinstance(e, DeviceError):
            raise
        raise DeviceError(f"--device {text!r}: {e}") from e
    if opts:
        raise DeviceError(f"--device {text!r}: unknown options {', '.join(sorted(opts))} for {kind}")
    if ble:
        return BleLink(device, address, backend=backend, **kw)
    return SerialLink(device, address, **({"baudrate": baud} if name == "cxf" else {}), **kw)


def parse_devices(texts: list[str], clock=None, backend: type | None = None) -> list[Link]:
    links = [parse_device(t, clock, backend) for t in texts]
    seen: dict[str, int] = {}
    for link in links:  # two of a kind get distinct names: polar, polar2
        n = seen[link.device.name] = seen.get(link.device.name, 0) + 1
        if n > 1:
            link.device.name = f"{link.device.name}{n}"
    return links
