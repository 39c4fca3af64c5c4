"""Fuzz and throughput of the bridge's parsers and devices (not run in CI): `python -m benchmarks.bridge_fuzz`.

- Fuzz: `--cases` inputs (default 100,000) per parser (BITalino, Polar PMD notifications, CXF) and per device
  `feed` (BitalinoDevice, PolarDevice, CxfDevice): random bytes, valid data with bits flipped, bytes dropped,
  repeated or inserted, truncated, in random read sizes. Counts every exception a parser or device does not
  document (the parsers and devices raise nothing for bad bytes; `polar.parse_notification` raises PmdError).
- Read-size invariance: `--streams` faulty streams (default 1,000) per byte-stream protocol (BITalino, CXF),
  each read whole, in 64-byte reads, one frame a read and one byte a read: delivered frames and final
  counters must be identical. PMD arrives as whole notifications (one frame each), so read size does not
  apply to it; its faulty streams go through a device, which must never raise.
- Throughput: MB/s on random bytes in 4 KiB reads, and valid frames per second, for each parser.

Writes benchmarks/results/bridge/bridge_fuzz.{md,json}. Nothing here is timed in the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

from firmware_bridge.devices import BitalinoDevice, CxfDevice, PolarDevice, StreamInfo
from firmware_bridge.protocols import bitalino, cxf, polar
from firmware_bridge.simulators.fuzz import FAULTS, bitalino_stream, cxf_stream, inject, same_for_every_read_size

OUT = Path(__file__).resolve().parent / "results" / "bridge"


def _mutate(rng: np.random.Generator, valid: bytes) -> bytes:
    """Random bytes, or a valid input with one fault, or truncated."""
    kind = rng.integers(0, 4)
    if kind == 0 or not valid:
        return rng.bytes(int(rng.integers(0, 300)))
    if kind == 1:
        return valid[: int(rng.integers(0, len(valid) + 1))]
    return inject(rng, valid, 8, str(rng.choice(FAULTS[:4])))


def _chunks(rng: np.random.Generator, data: bytes):
    i = 0
    while i < len(data):
        n = int(rng.integers(1, 200))
        yield data[i : i + n]
        i += n


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.undocumented: Counter = Counter()
        self.example: dict[str, str] = {}

    def run(self, fn, *args) -> None:
        self.cases += 1
        try:
            fn(*args)
        except Exception as e:
            name = type(e).__name__
            self.undocumented[name] += 1
            self.example.setdefault(name, "".join(traceback.format_exception_only(e)).strip())

    def to_dict(self) -> dict:
        return {"cases": self.cases, "undocumented_exceptions": sum(self.undocumented.values()),
                "by_type": dict(self.undocumented), "examples": self.example}


def fuzz(cases: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}

    def bitalino_case(data: bytes, n: int) -> None:
        p = bitalino.BitalinoParser(n, int(rng.integers(0, 16)))
        for c in _chunks(rng, data):
            p.feed(c)
        p.flush()
        p.diagnose()

    def polar_case(data: bytes) -> None:
        try:
            polar.parse_notification(data)
        except polar.PmdError:
            pass

    def cxf_case(data: bytes) -> None:
        p = cxf.CxfParser()
        for c in _chunks(rng, data):
            p.feed(c)
        p.flush()

    tallies = {k: Tally() for k in ("bitalino parser", "polar parse_notification", "cxf parser",
                                    "BitalinoDevice.feed", "PolarDevice.feed", "CxfDevice.feed")}
    bit_dev = BitalinoDevice("b", {1: ("x", "raw"), 3: ("y", "eda")}, 1000)
    pol_dev = PolarDevice("p", acc="acc", ecg="ecg")
    cxf_dev = CxfDevice("c", {2: (StreamInfo("z", 3, 100.0, ""), 0.01)})
    for dev in (bit_dev, pol_dev, cxf_dev):
        dev.connected()
    t = 0.0
    for k in range(cases):
        n = int(rng.integers(1, 7))
        valid_bit = bitalino_stream(rng, n, int(rng.integers(1, 30)), None).data
        tallies["bitalino parser"].run(bitalino_case, _mutate(rng, valid_bit), n)
        meas = polar.ECG if rng.random() < 0.5 else polar.ACC
        shape = (int(rng.integers(0, 80)),) if meas == polar.ECG else (int(rng.integers(0, 40)), 3)
        samples = np.cumsum(rng.integers(-60, 60, shape), axis=0)
        compressed = meas == polar.ACC and rng.random() < 0.5 and shape[0] > 0
        valid_pmd = polar.encode_notification(meas, int(rng.integers(0, 2**62)), samples, compressed=compressed)
        notification = _mutate(rng, valid_pmd)
        tallies["polar parse_notification"].run(polar_case, notification)
        valid_cxf = cxf_stream(rng, int(rng.integers(1, 4)), None).data
        tallies["cxf parser"].run(cxf_case, _mutate(rng, valid_cxf))
        t += 0.01
        tallies["BitalinoDevice.feed"].run(bit_dev.feed, _mutate(rng, valid_bit), t)
        source = polar.CONTROL_POINT if rng.random() < 0.05 else polar.DATA
        tallies["PolarDevice.feed"].run(pol_dev.feed, notification, t, source)
        tallies["CxfDevice.feed"].run(cxf_dev.feed, _mutate(rng, valid_cxf), t)
        if k % 5000 == 4999:  # a reconnect now and then: disconnected() and a fresh parser are fuzzed too
            for dev in (bit_dev, pol_dev, cxf_dev):
                tallies[f"{type(dev).__name__}.feed"].run(dev.disconnected, t)
                dev.connected()
    for name, tally in tallies.items():
        out[name] = tally.to_dict()
    return out


def invariance(streams: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for proto in ("bitalino", "cxf"):
        differ, by_fault = 0, Counter()
        for _ in range(streams):
            fault = str(rng.choice(FAULTS))
            if proto == "bitalino":
                n = int(rng.integers(1, 7))
                stream = bitalino_stream(rng, n, int(rng.integers(20, 120)), fault)
                same = same_for_every_read_size(lambda: bitalino.BitalinoParser(n, 0), stream)
            else:
                stream = cxf_stream(rng, int(rng.integers(4, 30)), fault)
                same = same_for_every_read_size(cxf.CxfParser, stream)
            by_fault[fault] += 1
            differ += not same
        out[proto] = {"streams": streams, "read_sizes": "whole, 64 B, one frame, 1 B", "differing": differ,
                      "faults": dict(by_fault)}
    # PMD: faulty notification streams through a device (one notification = one frame: no read size)
    dev, died = PolarDevice("p", acc="acc"), 0
    dev.connected()
    for k in range(streams):
        for j in range(20):
            x = rng.integers(-500, 500, (36, 3))
            note = polar.encode_notification(polar.ACC, 10**12 + (20 * k + j) * 36 * 10**7, x)
            if rng.random() < 0.2:
                note = _mutate(rng, note)
            try:
                dev.feed(note, float(k), polar.DATA)
            except Exception:
                died += 1
    out["polar"] = {"streams": streams, "notifications": 20 * streams, "device_exceptions": died,
                    "bad_notifications_counted": dev.counters.bad_notifications}
    return out


def _rate(fn, data: bytes, chunk: int = 4096) -> float:
    t = time.perf_counter()
    fn(data, chunk)
    return time.perf_counter() - t


def throughput(seed: int, random_mb: float) -> dict:
    rng = np.random.default_rng(seed)
    garbage = rng.bytes(int(random_mb * 1e6))
    out = {}
    for n in (1, 3, 6):
        p = bitalino.BitalinoParser(n)
        dt = _rate(lambda d, c: [p.feed(d[i : i + c]) for i in range(0, len(d), c)], garbage)
        frames = 200_000
        valid = bitalino_stream(rng, n, frames, None).data
        q = bitalino.BitalinoParser(n)
        dv = _rate(lambda d, c: [q.feed(d[i : i + c]) for i in range(0, len(d), c)] + [q.flush()], valid)
        assert q.counters.frames == frames
        out[f"bitalino {n} ch"] = {"random_MB_per_s": len(garbage) / dt / 1e6, "valid_frames_per_s": frames / dv}
    p = cxf.CxfParser()
    dt = _rate(lambda d, c: [p.feed(d[i : i + c]) for i in range(0, len(d), c)], garbage)
    valid = cxf_stream(rng, 20_000, None).data
    q = cxf.CxfParser()
    dv = _rate(lambda d, c: [q.feed(d[i : i + c]) for i in range(0, len(d), c)], valid)
    assert q.counters.frames == 20_000
    out["cxf"] = {"random_MB_per_s": len(garbage) / dt / 1e6, "valid_frames_per_s": 20_000 / dv,
                  "valid_MB_per_s": len(valid) / dv / 1e6}
    # PMD: random notifications of the H10's ECG size (229 bytes) and valid ACC/ECG ones
    notes = [garbage[i : i + 229] for i in range(0, len(garbage) - 229, 229)]

    def parse_all(ns):
        for x in ns:
            try:
                polar.parse_notification(x)
            except polar.PmdError:
                pass

    t = time.perf_counter()
    parse_all(notes)
    dt = time.perf_counter() - t
    valid_notes = [polar.encode_notification(polar.ECG, 10**12, rng.integers(-2000, 2000, 73)) for _ in range(20_000)]
    t = time.perf_counter()
    parse_all(valid_notes)
    dv = time.perf_counter() - t
    out["polar"] = {"random_MB_per_s": 229 * len(notes) / dt / 1e6, "valid_frames_per_s": len(valid_notes) / dv,
                    "valid_samples_per_s": 73 * len(valid_notes) / dv}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bridge_fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000, help="fuzz cases per parser and device (default: %(default)s)")
    ap.add_argument("--streams", type=int, default=1_000, help="faulty streams per protocol (default: %(default)s)")
    ap.add_argument("--random-mb", type=float, default=8.0, help="MB of random bytes for throughput (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    # every malformed input is logged by the devices, as it should be live; a million of them here say nothing
    logging.getLogger("firmware_bridge").setLevel(logging.CRITICAL)
    wall = time.perf_counter()
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "command": f"python -m benchmarks.bridge_fuzz --cases {args.cases} --streams {args.streams} "
                         f"--random-mb {args.random_mb:g} --seed {args.seed}",
              "throughput": throughput(args.seed, args.random_mb),
              "invariance": invariance(args.streams, args.seed + 1),
              "fuzz": fuzz(args.cases, args.seed + 2)}
    result["wall_s"] = round(time.perf_counter() - wall, 1)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bridge_fuzz.json").write_text(json.dumps(result, indent=1) + "\n")
    fz, inv, tp = result["fuzz"], result["invariance"], result["throughput"]
    lines = ["# Bridge fuzz and parser throughput (`python -m benchmarks.bridge_fuzz`)", "",
             f"`{result['command']}`; {platform.platform()}, Python {platform.python_version()}; "
             f"{result['wall_s']} s wall.", "",
             "## Fuzz: undocumented exceptions (target 0 in >= 100,000 cases each)", "",
             "| parser or device | cases | undocumented exceptions |", "|---|---|---|"]
    lines += [f"| {k} | {v['cases']:,} | {v['undocumented_exceptions']} {v['by_type'] or ''} |" for k, v in fz.items()]
    lines += ["", "## Read-size invariance: whole, 64-byte, one-frame and 1-byte reads (target: identical on >= 1,000 "
              "faulty streams)", "", "| protocol | faulty streams | differing |", "|---|---|---|"]
    for k in ("bitalino", "cxf"):
        lines.append(f"| {k} | {inv[k]['streams']:,} ({inv[k]['faults']}) | {inv[k]['differing']} |")
    lines.append(f"| polar (whole notifications: no read size; through PolarDevice) | {inv['polar']['streams']:,} "
                 f"({inv['polar']['notifications']:,} notifications) | device exceptions: "
                 f"{inv['polar']['device_exceptions']}; malformed counted: {inv['polar']['bad_notifications_counted']} |")
    lines += ["", "## Throughput, 4 KiB reads (targets: >= 1 MB/s on random bytes, >= 200,000 valid frames/s)", "",
              "| parser | random bytes MB/s | valid frames/s |", "|---|---|---|"]
    lines += [f"| {k} | {v['random_MB_per_s']:,.1f} | {v['valid_frames_per_s']:,.0f} |" for k, v in tp.items()]
    lines += ["", "Polar rows: random 229-byte notifications and valid 73-sample ECG notifications, one frame each.", ""]
    (OUT / "bridge_fuzz.md").write_text("\n".join(lines))
    print("\n".join(lines))
    bad = sum(v["undocumented_exceptions"] for v in fz.values()) + inv["bitalino"]["differing"] + inv["cxf"]["differing"]
    return 0 if bad == 0 and inv["polar"]["device_exceptions"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
