"""Collecting labelled windows for personalisation, from a recording or from sensors (live or simulated).

From a recording (`replay:<dataset>:<subject>`, or a labelled BYO folder such as one written by
`run --record` and labelled afterwards): non-overlapping windows of the bundle's length, the first N of
each class from `skip_s` seconds on, with their raw windows kept (the parity check reruns them).

From sensors: for each class in turn the user is asked to do it (Enter starts, unless `prompt` is off),
the bridge streams the sensors into the runtime, and every window that ends while they do it is one
labelled window (a window of the bundle's length every window's length: no two overlap), until N. A
simulated user does class c by replaying the first stretch of the subject's recording labelled c.
numpy, the runtime and the bridge only: this runs on the device.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from crossl_edge.data.windowing import make_windows
from crossl_edge.personalize.bundle import Collected
from crossl_edge.personalize.embed import embed_windows
from crossl_edge.personalize.heads import PersonalizeError
from crossl_edge.runtime.model import EdgeModel


def _present(model: EdgeModel, present: Sequence[str] | None) -> tuple[str, ...]:
    names = tuple(present) if present else model.names
    unknown = [n for n in names if n not in model.names]
    if unknown:
        raise PersonalizeError(f"--present {','.join(unknown)}: not in the bundle (it has {', '.join(model.names)})")
    return tuple(n for n in model.names if n in names)


def _classes(wanted: Sequence[str] | None, available: Sequence[str]) -> tuple[str, ...]:
    if not wanted:
        return tuple(available)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise PersonalizeError(f"classes {unknown} are not labelled in the source (it has {', '.join(available)})")
    return tuple(wanted)


def from_recording(
    model: EdgeModel, source: str, per_class: int, classes: Sequence[str] | None = None,
    present: Sequence[str] | None = None, skip_s: float = 0.0, data_root: str | None = None, quiet: bool = False,
) -> Collected:
    """The first `per_class` windows of each class of a labelled recording (see the module docstring)."""
    from crossl_edge.data import load_byo
    from crossl_edge.runtime.replay import load_recordings, parse_source

    if model.manifest.session_std_floor is not None:
        raise PersonalizeError(
            f"{model.manifest.name} was trained with per-user adaptation: its windows need the running statistics "
            "of a session, which windows cut from a recording here do not get; personalise it from a stream "
            "(--simulate or --device) instead"
        )

    if source.startswith("replay:"):
        recs, names = load_recordings(*parse_source(source), data_root)
    else:
        if not Path(source).is_dir():
            raise PersonalizeError(f"--from {source}: neither replay:<dataset>:<subject> nor a BYO folder")
        recs, _, names = load_byo(source)
    if not names:
        raise PersonalizeError(f"{source} has no class names: label it first (BYO `labels`, see the README)")
    present = _present(model, present)
    specs = [s for s in model.specs if s.name in present]
    w = model.manifest.window_s
    ws = make_windows(recs, specs, w, w, names, skip_short=True)  # hop = window: no two windows overlap
    classes = _classes(classes, [c for i, c in enumerate(names) if (ws.y == i).any()])
    keep, y = [], []
    order = np.lexsort((ws.t_start, np.unique(ws.subject, return_inverse=True)[1]))  # recordings in turn, in time
    for k, c in enumerate(classes):
        idx = [int(i) for i in order if ws.y[i] == names.index(c) and ws.t_start[i] >= skip_s][:per_class]
        keep += idx
        y += [k] * len(idx)
    keep = np.asarray(keep, dtype=np.int64)
    windows = {s.name: ws.x[s.name][keep] for s in specs}
    bar = tqdm(total=len(keep), desc="embedding labelled windows", disable=quiet)
    g, base = embed_windows(model, windows, present, progress=lambda i: bar.update(1))
    bar.close()
    return Collected(g, base, np.asarray(y, dtype=np.int64), classes, present, windows)


def _simulated_starts(model: EdgeModel, key: str, classes: Sequence[str], stretch_s: float,
                      data_root: str | None) -> dict[str, float]:
    """Per class, seconds into a subject's recording where its first stretch of `stretch_s` labelled so starts."""
    from crossl_edge.runtime.replay import load_recordings

    recs, names = load_recordings(model.manifest.raw["source"]["dataset"], key, data_root)
    r = recs[0]
    need = int(np.ceil(stretch_s * r.label_rate))
    starts = {}
    for cls in classes:
        if cls not in names or r.labels is None:
            raise PersonalizeError(f"the simulated subject {key} has no class {cls!r} (it has {', '.join(names)})")
        run = 0
        for i, lab in enumerate(r.labels == names.index(cls)):
            run = run + 1 if lab else 0
            if run >= need:
                starts[cls] = (i + 1 - need) / r.label_rate
                break
        else:
            raise PersonalizeError(f"subject {key} has no {stretch_s:g} s stretch of {cls!r} to simulate {cls!r} from")
    return starts


def from_sensors(
    model: EdgeModel, classes: Sequence[str], per_class: int, device_args: Sequence[str] | None = None,
    simulate: bool = False, subject: str | None = None, speed: float = 1.0, data_root: str | None = None,
    prompt: Callable[[str], None] | None = input, absent_after: float = 2.0, quiet: bool = False,
    timeout_factor: float = 3.0,
) -> Collected:
    """`per_class` windows of each class from live sensors (`device_args`) or simulated ones (see the module
    docstring). Stops a class after timeout_factor times the time it needs and says which windows are missing."""
    from crossl_edge.live import ScaledClock
    from crossl_edge.runtime.stream import OK, StreamingClassifier
    from firmware_bridge.config import parse_devices
    from firmware_bridge.hub import Hub

    if len(classes) < 2:
        raise PersonalizeError("name at least two classes to collect (--classes rest,stress)")
    m = model.manifest
    w = m.window_s
    if simulate:
        key = subject or m.raw["source"]["test_subjects"][0]
        starts = _simulated_starts(model, key, classes, w * (per_class + 2), data_root)
    g, base, y, present_seen = [], [], [], set()
    for k, cls in enumerate(classes):
        clock = ScaledClock(speed) if simulate else time.monotonic
        with tempfile.TemporaryDirectory(prefix="crossl-personalize-") as tmp:
            rig = None
            if simulate:
                from firmware_bridge.simulators.rig import bundle_rig

                rig = bundle_rig(m, tmp, clock, data_root, key, starts[cls])
                links = rig.connect(clock)
            else:
                links = parse_devices(list(device_args or ()), clock)
            if prompt is not None:
                prompt(f"class {k + 1}/{len(classes)}: {cls!r}. Press Enter when doing it ({per_class} windows of {w:g} s) ")
            stream = StreamingClassifier(model, hop_s=w, absent_after_s=absent_after)
            bar = tqdm(total=per_class, desc=f"{cls}", unit="window", disable=quiet)
            got = []
            hub_ref: list = []

            def on_prediction(p, got=got, bar=bar) -> None:
                if p.state == OK and len(got) < per_class:
                    got.append(p)
                    bar.update(1)
                    if len(got) == per_class:
                        hub_ref[0].stop()

            hub = Hub(links, stream, None, clock, stall_after_s=absent_after, on_prediction=on_prediction)
            hub_ref.append(hub)

            async def main(hub=hub, rig=rig) -> None:
                if rig is not None:
                    clock.reset()
                    rig.start()
                try:
                    await hub.run(timeout_factor * w * (per_class + 1))
                finally:
                    if rig is not None:
                        await rig.stop()

            asyncio.run(main())
            bar.close()
        if len(got) < per_class:
            raise PersonalizeError(f"{cls!r}: only {len(got)} of {per_class} windows arrived (are the sensors connected "
                                   "and streaming?); nothing was written")
        for p in got:
            g.append(p.embedding)
            base.append(p.base_logits)
            present_seen.update(p.present)
            y.append(k)
    return Collected(np.stack(g).astype(np.float32), np.stack(base).astype(np.float32), np.asarray(y, dtype=np.int64),
                     tuple(classes), tuple(n for n in model.names if n in present_seen))
