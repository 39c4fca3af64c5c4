"""Latency of the Lab Streaming Layer path: `python -m benchmarks.bridge_lsl [--bundle export/demo-int8] [--seconds 60]`.

Simulated sensor apps (firmware_bridge.simulators.lsl) publish every modality of the bundle, replaying a held-out
subject, as LSL streams in real time on this machine (one stream per sample rate, pushed every 20 ms as apps do);
LSL stays on this host (resolve scope "machine", a session of its own); the hub reads them through
`--device lsl:...` links (real pylsl inlets, clock sync) into the torch-free runtime,
a prediction every second (not the bundle's hop, for more samples). For each prediction it measures, in one
process (perf_counter):
- push to prediction: from the outlet's push of the chunk that completed the prediction's window (the latest
  push, among the streams present, of the chunk holding the window's last sample) to the prediction handed on:
  LSL transport, the inlet's pull, resampling and inference;
- read to prediction: from the link's pull of that chunk, the figure the serial and BLE soak reports
  (benchmarks.bridge_soak), for comparison.
The first prediction is left out (start-up). It checks the ledger too: sent = delivered + lost per stream.

Writes benchmarks/results/bridge/bridge_lsl.{md,json}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from pathlib import Path

import numpy as np

from crossl_edge.live import ScaledClock
from crossl_edge.paths import EXPORT_ROOT
from firmware_bridge.hub import Hub
from firmware_bridge.lsl import keep_on_this_machine, pylsl
from firmware_bridge.simulators.rig import lsl_rig

OUT = Path(__file__).resolve().parent / "results" / "bridge"


def push_of(sensor, t_lsl: float) -> float | None:
    """perf_counter of the sensor's push that carried its sample at LSL time t_lsl (None: not pushed)."""
    for wall, last, n in sensor.pushed:
        if last >= t_lsl - 1e-6:
            return wall
    return None


def run(bundle: Path, seconds: float, data_root=None) -> dict:
    from crossl_edge.runtime import EdgeModel
    from crossl_edge.runtime.stream import OK, StreamingClassifier

    lsl = pylsl()
    model = EdgeModel(bundle, "auto", 1)
    rig = lsl_rig(model.manifest, data_root)
    clock = ScaledClock(1.0)
    stream = StreamingClassifier(model, 1.0)
    done: list[tuple[object, float]] = []
    hub = Hub(rig.connect(clock), stream, None, clock, on_prediction=lambda p: done.append((p, time.perf_counter())))
    offset = 0.0

    async def main() -> None:
        nonlocal offset
        clock.reset()
        offset = clock() - lsl.local_clock()  # hub time - LSL time (both monotonic: constant)
        rig.start()
        try:
            await hub.run(seconds, before_stop=rig.quiesce)
        finally:
            await rig.stop()

    wall = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - wall
    sensor_of = {name: s for s in rig.lsl for name in s.layout}
    push_ms = []
    for p, at in done[1:]:
        if p.state != OK:
            continue
        # the window's last sample of each present stream: one sample period before the window's end
        pushes = [push_of(sensor_of[n], p.t - offset - 1.0 / sensor_of[n].rate) for n in p.present]
        if None not in pushes:
            push_ms.append((at - max(pushes)) * 1e3)
    read_ms = np.asarray(hub.latencies_s[1:]) * 1e3
    stats = lambda x: {"n": int(len(x)), "median": float(np.median(x)), "p99": float(np.percentile(x, 99)),
                       "max": float(np.max(x))} if len(x) else None
    s = hub.summary()
    return {"seconds": seconds, "wall_s": round(wall, 1), "backend": model.backend, "predictions": s["predictions"],
            "push_to_prediction_ms": stats(np.asarray(push_ms)), "read_to_prediction_ms": stats(read_ms),
            "ledger": rig.ledger(), "streams": {sensor.name.rsplit("-", 1)[0]: {"rate": sensor.rate, "channels": sensor.channels,
                                                                               "counter": sensor.counter} for sensor in rig.lsl},
            "devices": s["devices"], "liblsl": lsl.library_version(), "pylsl": _version("pylsl")}


def _version(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bridge_lsl", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=str(EXPORT_ROOT / "demo-int8"), help="bundle (default: %(default)s; make bundle)")
    p.add_argument("--seconds", type=float, default=60.0, help="real-time seconds (default: %(default)s)")
    p.add_argument("--data", default=None, help="data folder (default: $CROSSL_EDGE_DATA)")
    args = p.parse_args(argv)
    keep_on_this_machine("crossl-edge-bench")  # every stream is on this host: no LSL traffic leaves it
    bundle = Path(args.bundle)
    if not (bundle / "manifest.json").is_file():
        raise SystemExit(f"no bundle at {bundle}: run `make bundle` (or pass --bundle)")
    r = run(bundle, args.seconds, args.data)
    result = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "bundle": bundle.name, **r}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bridge_lsl.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    push, read = r["push_to_prediction_ms"] or {}, r["read_to_prediction_ms"] or {}
    balanced = all(v["balanced"] for v in r["ledger"].values())
    streams = ", ".join(f"{k} ({v['channels']} ch at {v['rate']:g} Hz{', with nSeq' if v['counter'] else ''})"
                        for k, v in r["streams"].items())
    lines = [
        "# Lab Streaming Layer latency (`python -m benchmarks.bridge_lsl`)", "",
        f"Bundle `{bundle.name}` on {r['backend']}; {platform.platform()}, Python {platform.python_version()}, pylsl "
        f"{r['pylsl']}, liblsl {r['liblsl']}. {args.seconds:g} s at real time ({r['wall_s']} s wall), simulated apps "
        f"publishing {streams} on this machine, a prediction every second.", "",
        "| from | to | median | p99 | max | predictions |", "|---|---|---|---|---|---|",
        f"| outlet push (sender) | prediction | {push.get('median', float('nan')):.2f} ms | {push.get('p99', float('nan')):.2f} ms "
        f"| {push.get('max', float('nan')):.2f} ms | {push.get('n', 0)} |",
        f"| inlet pull (bridge read) | prediction | {read.get('median', float('nan')):.2f} ms | {read.get('p99', float('nan')):.2f} ms "
        f"| {read.get('max', float('nan')):.2f} ms | {read.get('n', 0)} |", "",
        f"Ledger balanced (sent = delivered + lost, every stream): **{balanced}**: "
        + ", ".join(f"{k} {v['sent']} = {v['delivered']} + {v['lost']}" for k, v in r["ledger"].items()) + ".",
        "The serial and BLE figures (frame read to prediction) are in bridge_soak.md.", ""]
    (OUT / "bridge_lsl.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if balanced else 1


if __name__ == "__main__":
    raise SystemExit(main())
