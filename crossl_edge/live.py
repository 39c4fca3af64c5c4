"""Live sensors (`--device`) or their simulators (`--simulate`) through the bridge into the runtime.

Used by `python -m crossl_edge.run`; numpy, pyserial and bleak only (bleak only for BLE devices, pylsl only for
LSL streams and `--lsl-out`), never torch.
`--simulate` builds sensors for every modality of the bundle from one of its held-out subjects (see
firmware_bridge.simulators.rig), reaches them through the same `--device` strings a user would type, and
takes two of them away for a while: the Polar strap goes out of BLE range and the BITalino's serial port is
unplugged, so the encoders of the missing modalities are skipped and come back when the sensors do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time

from firmware_bridge.config import parse_devices
from firmware_bridge.hub import Event, Hub
from firmware_bridge.recorder import Recorder

log = logging.getLogger(__name__)

SIMULATED_OUTAGES = {"polar": (30.0, 50.0), "bitalino": (60.0, 80.0)}  # seconds after start
SIMULATE_DURATION_S = 100.0


class ScaledClock:
    """Host time that runs `speed` times faster than the wall clock (simulations only), from 0 at creation."""

    def __init__(self, speed: float = 1.0) -> None:
        self.speed = speed
        self.reset()

    def reset(self) -> None:
        """Time 0 is now (call it when the simulation starts, after loading its signals)."""
        self._start = time.monotonic()

    def __call__(self) -> float:
        return (time.monotonic() - self._start) * self.speed


def format_live(p, t0: float) -> str:
    if p.probs is None:
        return f"t={p.t - t0:7.1f}s  NO SENSOR PRESENT"
    skipped = [n for n in p.present if n not in p.encoded]
    return (f"t={p.t - t0:7.1f}s  pred={p.label:<8} p={p.probs.max():.2f}  present={','.join(p.present):<18} "
            f"ran={','.join(p.encoded) or '-':<18}" + (f" reused={','.join(skipped)}" if skipped else ""))


def run_live(args: argparse.Namespace, model) -> int:
    from crossl_edge.runtime.stream import StreamingClassifier

    m = model.manifest
    speed = args.speed if args.speed else 1.0
    clock = ScaledClock(speed) if args.simulate else time.monotonic
    rig = None
    with tempfile.TemporaryDirectory(prefix="crossl-sim-") as tmp:
        if args.simulate:
            from firmware_bridge.simulators.rig import bundle_rig

            rig = bundle_rig(m, tmp, clock, args.data, args.subject)
            links = rig.connect(clock)
            for p in rig.peripherals:
                p.out_of_range(*SIMULATED_OUTAGES["polar"])
            for p in rig.ptys:
                if p.path.name == "bitalino":
                    p.unplug(*SIMULATED_OUTAGES["bitalino"])
            print("simulated sensors, reached as: " + " ".join(f"--device {a}" for a in rig.device_args))
            outages = ", ".join(f"{k} {a:g}-{b:g} s" for k, (a, b) in SIMULATED_OUTAGES.items() if k in rig.models)
            print(f"outages: {outages}; {speed:g}x real time")
        else:
            links = parse_devices(args.device, clock)
        stream = StreamingClassifier(model, args.hop, args.absent_after)
        recorder = None
        if args.record:
            used = {n for link in links for n in link.device.streams}
            recorder = Recorder(args.record, [s for s in m.specs if s.name in used])
            print(f"recording {', '.join(s for s in recorder.specs)} to {args.record} (BYO format, unlabelled)")
        outlet, taps = None, []
        if args.lsl_out:
            from firmware_bridge.lsl import PredictionOutlet, RawOutlets, clock_to_lsl

            outlet = PredictionOutlet(args.lsl_out, m.class_names, model.names, clock_to_lsl(clock))
            if args.lsl_raw:
                streams = {n: info for link in links for n, info in link.device.streams.items()}
                taps.append(RawOutlets(f"{args.lsl_out}-raw", streams, clock_to_lsl(clock)))
            print(f"publishing predictions as the LSL stream {args.lsl_out!r}" + (
                f", and {', '.join(f'{args.lsl_out}-raw-{n}' for n in taps[0].outlets)}" if taps else ""))
        out = open(args.out, "w") if args.out else None
        start = 0.0 if args.simulate else clock()

        def on_prediction(p) -> None:
            if outlet is not None:
                outlet.push(p)
            if out:
                out.write(json.dumps({**p.to_dict(m.class_names), "t": round(p.t - start, 3)}) + "\n")
            if not args.quiet:
                print(format_live(p, start), flush=True)

        def on_event(e: Event) -> None:
            if not args.quiet:
                print(f"t={e.t - start:7.1f}s  [{e.device}] {e.state}" + (f": {e.detail}" if e.detail else ""), flush=True)

        hub = Hub(links, stream, recorder, clock, stall_after_s=args.absent_after, on_prediction=on_prediction,
                  on_event=on_event, taps=taps)
        duration = args.duration if args.duration is not None else (SIMULATE_DURATION_S if args.simulate else None)
        print(f"{m.name}: {m.precision} on {model.backend}; a prediction every {stream.hop_s:g} s from "
              f"{m.window_s:g} s windows" + (f"; {duration:g} s" if duration else "; Ctrl-C stops") + "; "
              + stream.describe_normalization(), flush=True)

        async def main() -> None:
            if rig is not None:
                clock.reset()  # the outages count from here, not from before the signals were loaded
                rig.start()
            try:
                await hub.run(duration, before_stop=rig.quiesce if rig is not None else None)
            finally:
                if rig is not None:
                    await rig.stop()

        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr)
        finally:
            if out:
                out.close()
    s = hub.summary()
    print(f"\n{s['predictions']} predictions ({s['stream']['no_modality']} with no sensor present); "
          f"encoder runs {s['stream']['encoder_runs']}, reused {s['stream']['encoder_reuses']}")
    for name, d in s["devices"].items():
        print(f"{name}: delivered {d['delivered']}, lost {d['lost'] or 0}, frames {d['frames']}, CRC errors "
              f"{d['crc_errors']}, resyncs {d['resyncs']}, reconnects {d['reconnects']}")
    if "latency_ms" in s:
        lat = s["latency_ms"]
        print(f"frame-to-prediction latency: median {lat['median']:.2f} ms, p99 {lat['p99']:.2f} ms over {lat['n']}")
    if recorder is not None:
        print(f"recorded {recorder.counters.files} file(s) to {args.record}")
    if rig is not None:
        ledger = rig.ledger()
        print("sent = delivered + lost: " + ", ".join(
            f"{k} {v['sent']} = {v['delivered']} + {v['lost']}" + ("" if v["balanced"] else " (UNBALANCED)")
            for k, v in ledger.items()))
    return 0
