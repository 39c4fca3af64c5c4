"""`python -m crossl_edge.run --bundle export/<name> (--source replay:<dataset>:<subject> | --device ... | --simulate)`.

The on-device loop. A replayed real recording streams through the torch-free runtime with timestamped
predictions against the true labels and a running macro-F1; modalities can be taken away and given back
(--drop, --stall) to watch the runtime skip their encoders. Live sensors come through firmware_bridge
(`--device`, see firmware_bridge/config.py for the syntax), or simulated ones that speak the same bytes
(`--simulate`, crossl_edge/live.py), or Lab Streaming Layer streams (`--device lsl:...`); `--lsl-out` publishes the
predictions (and `--lsl-raw` the bridged streams) over LSL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from crossl_edge import cli


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m crossl_edge.run",
        description="Run an edge bundle on a stream: a replayed real recording (--source), live sensors (--device) or "
        "simulated ones (--simulate). Needs numpy and one runtime (ai-edge-litert, or ExecuTorch where torch is "
        "installed), pyserial/bleak for sensors; never torch itself.",
    )
    p.add_argument("--bundle", required=True, help="bundle folder written by `python -m crossl_edge.export`")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="replay:<dataset>:<subject or group>, e.g. replay:stress-predict:S04")
    what.add_argument("--device", action="append", metavar="KIND:ADDRESS[,OPTIONS]",
                      help="a live sensor, repeatable: bitalino:/dev/rfcomm0,rate=1000,A1=emg:emg,A3=eda:eda | "
                      "bitalino-ble:<addr> | polar:<addr>[,acc=100] | cxf:<port>,<id>=<stream>:<channels>@<rate> | "
                      "cxf-ble:<addr>,... | lsl:<stream name or type>[,map=acc:0-2+eda:3][,seq=<channel>] (see the "
                      "README)")
    what.add_argument("--simulate", action="store_true",
                      help="simulated sensors for every modality of the bundle, replaying a held-out subject, with "
                      "a sensor taken away and given back")
    p.add_argument("--backend", default="auto", choices=["auto", "litert", "tflite-runtime", "executorch"],
                   help="runtime (default: auto = the first installed of litert, tflite-runtime, executorch)")
    p.add_argument("--verify-key", action="append", default=None, metavar="NAME.pub",
                   help="run the bundle only if its manifest is signed by this Ed25519 verify key (repeatable: any of "
                   "them; default: the keys named by $CROSSL_EDGE_VERIFY_KEY, if any; needs the signing extra)")
    p.add_argument("--threads", dest="runtime_threads", type=int, default=1, help="runtime threads (default: %(default)s; more is slower at this size)")
    p.add_argument("--speed", type=float, default=None,
                   help="replay/simulation speed: 1 = real time, 10 = ten times faster; 0 = as fast as possible "
                   "(replays only). Default: 0 for --source, 1 for --simulate")
    p.add_argument("--duration", type=float, default=None,
                   help="stop after this many seconds (default: the whole replay; 100 s with --simulate; "
                   "until Ctrl-C with --device)")
    p.add_argument("--record", default=None, metavar="DIR",
                   help="with --device/--simulate: record the streams the bundle uses to DIR as an unlabelled "
                   "BYO data set (for CroSSL pretraining)")
    p.add_argument("--subject", default=None, help="--simulate: the subject to replay (default: the bundle's first "
                   "held-out test subject)")
    p.add_argument("--hop", type=float, default=None, help="seconds between predictions (default: the bundle's hop)")
    p.add_argument("--absent-after", type=float, default=2.0,
                   help="a modality with no samples for this many seconds is absent (default: %(default)s)")
    p.add_argument("--drop", action="append", default=[], metavar="MOD@START:STOP",
                   help="disconnect a modality from START to STOP seconds (the bridge reports it), e.g. eda@60:120; repeatable")
    p.add_argument("--stall", action="append", default=[], metavar="MOD@START:STOP",
                   help="stop a modality's samples without a disconnect (detected after --absent-after); repeatable")
    p.add_argument("--data", default=None, help="data folder (default: $CROSSL_EDGE_DATA, then the cache)")
    p.add_argument("--out", default=None, help="also write every prediction as JSON lines to this file")
    p.add_argument("--lsl-out", default=None, metavar="NAME",
                   help="also publish every prediction as the Lab Streaming Layer stream NAME (irregular rate, float32: "
                   "the class probabilities, then 1/0 per modality present; stamped with the LSL time of the window's "
                   "end); needs pylsl (the lsl extra)")
    p.add_argument("--lsl-raw", action="store_true",
                   help="with --lsl-out and --device/--simulate: also re-publish every bridged sensor stream as the LSL "
                   "stream NAME-raw-<stream> (its device rate, physical units), for LabRecorder")
    p.add_argument("--quiet", action="store_true", help="only the summary")
    return p


def body(args: argparse.Namespace) -> int:
    import numpy as np

    from crossl_edge.metrics import macro_f1
    from crossl_edge.runtime.bundle import load_bundle
    from crossl_edge.runtime.model import EdgeModel
    from crossl_edge.runtime.replay import Outage, ReplaySource, load_recordings, parse_source
    from crossl_edge.runtime.stream import OK, StreamingClassifier

    if args.speed is not None and args.speed < 0:
        raise ValueError(f"--speed must be >= 0, got {args.speed}")
    if args.lsl_raw and not args.lsl_out:
        raise ValueError("--lsl-raw names its streams after --lsl-out NAME: give both")
    if args.source is None:
        if args.drop or args.stall:
            raise ValueError("--drop/--stall act on replays (--source); a live sensor is taken away by unplugging it")
        if args.device and args.speed:
            raise ValueError("--speed does not apply to live sensors")
        from crossl_edge.live import run_live

        return run_live(args, EdgeModel(load_bundle(args.bundle, verify_keys=args.verify_key), args.backend,
                                        args.runtime_threads))
    if args.record or args.subject or args.lsl_raw:
        raise ValueError("--record, --subject and --lsl-raw go with --device/--simulate, not with --source")
    args.speed = args.speed or 0.0
    dataset, key = parse_source(args.source)
    outages = [Outage.parse(t, "disconnect") for t in args.drop] + [Outage.parse(t, "stall") for t in args.stall]
    model = EdgeModel(load_bundle(args.bundle, verify_keys=args.verify_key), args.backend, args.runtime_threads)
    m = model.manifest
    for o in outages:
        if o.modality not in model.names:
            raise ValueError(f"--drop/--stall {o.modality!r}: the bundle's modalities are {', '.join(model.names)}")
    recordings, classes = load_recordings(dataset, key, args.data)
    source = ReplaySource(recordings, classes, m)
    held_out = m.raw.get("source", {}).get("test_subjects")
    if held_out is not None and m.raw["source"].get("dataset") == dataset and key not in held_out:
        print(f"warning: {key} was not among the bundle's held-out test subjects ({', '.join(held_out)}): its scores "
              "are optimistic", file=sys.stderr)
    stream = StreamingClassifier(model, args.hop, args.absent_after)
    print(f"{m.name}: {m.precision} on {model.backend}; {dataset} {key}: {len(recordings)} recording(s), "
          f"{source.duration:.0f} s; a prediction every {stream.hop_s:g} s from {m.window_s:g} s windows; "
          + stream.describe_normalization())

    outlet = None
    if args.lsl_out:
        from firmware_bridge.lsl import PredictionOutlet, pylsl

        lsl0, speed = pylsl().local_clock(), args.speed  # stream time t is played at lsl0 + t / speed
        outlet = PredictionOutlet(args.lsl_out, m.class_names, model.names,
                                  (lambda t: lsl0 + t / speed) if speed > 0 else (lambda t: pylsl().local_clock()))
        print(f"publishing predictions as the LSL stream {args.lsl_out!r}"
              + ("" if speed > 0 else " (at --speed 0 each is stamped when it is made)"))
    out = open(args.out, "w") if args.out else None
    y_true, y_pred, lines, start = [], [], 0, time.perf_counter()
    disconnected: set[str] = set()
    try:
        for chunk in source.chunks():
            if chunk.first and chunk.recording > 0:  # the next recording: a new stream, predicted from its first window
                stream.restart()
            for name, x, t0 in chunk.pushes:
                outage = next((o for o in outages if o.covers(name, t0)), None)
                if outage is None:
                    disconnected.discard(name)
                    stream.push(name, x, t0)
                elif outage.kind == "disconnect" and name not in disconnected:
                    stream.set_connected(name, False)
                    disconnected.add(name)
            for p in stream.poll(chunk.t_end):
                truth = source.label_at(p.t)
                if p.state == OK and truth >= 0:
                    y_true.append(truth)
                    y_pred.append(m.class_names.index(p.label))
                f1 = macro_f1(np.array(y_true), np.array(y_pred), len(m.class_names)) if y_true else float("nan")
                if out:
                    # null, not NaN, before the first scored prediction: NaN is not JSON
                    out.write(json.dumps({**p.to_dict(m.class_names), "true": m.class_names[truth] if truth >= 0 else None,
                                          "running_macro_f1": round(f1, 4) if y_true else None},
                                         allow_nan=False) + "\n")
                if outlet is not None:
                    outlet.push(p)
                if not args.quiet:
                    print(format_line(p, truth, m.class_names, f1))
                lines += 1
            if args.speed > 0:
                lag = chunk.t_end / args.speed - (time.perf_counter() - start)
                if lag > 0:
                    time.sleep(lag)
    finally:
        if out:
            out.close()
    wall = time.perf_counter() - start
    c = stream.counters
    f1 = macro_f1(np.array(y_true), np.array(y_pred), len(m.class_names)) if y_true else float("nan")
    acc = float(np.mean(np.array(y_true) == np.array(y_pred))) if y_true else float("nan")
    print(f"\n{c.predictions} predictions ({c.no_modality} with no sensor present), {len(y_true)} scored against labels: "
          f"macro-F1 {f1:.3f}, accuracy {acc:.3f}")
    print(f"encoder runs {dict(c.encoder_runs)}, reused {dict(c.encoder_reuses)}; aggregator runs "
          f"{model.calls['aggregate']}")
    print(f"dropped samples: {c.nonfinite_dropped} non-finite, {c.out_of_order_dropped} out of order; {c.gaps} gaps, "
          f"{c.disconnects} disconnects")
    print(f"{source.duration:.0f} s of signal in {wall:.1f} s ({source.duration / max(wall, 1e-9):.0f}x real time)")
    return 0


def format_line(p, truth: int, class_names: tuple[str, ...], f1: float) -> str:
    true = class_names[truth] if truth >= 0 else "-"
    if p.probs is None:
        return f"t={p.t:8.1f}s  true={true:<8} NO SENSOR PRESENT"
    skipped = [n for n in p.present if n not in p.encoded]
    return (f"t={p.t:8.1f}s  true={true:<8} pred={p.label:<8} p={p.probs.max():.2f}  present={','.join(p.present):<18} "
            f"ran={','.join(p.encoded) or '-':<18}" + (f" reused={','.join(skipped)}" if skipped else "")
            + f"  macro-F1 so far {f1:.3f}")


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
