"""Lab Streaming Layer in and out with real pylsl outlets and inlets on this machine, no mocks.

Simulated sensor apps (firmware_bridge.simulators.lsl) publish real held-out recordings; the conftest keeps LSL on
this machine and in a session of the test run's own. LSL runs in real time, so each live test takes its window
(10 s) and a little more.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crossl_edge.live import ScaledClock
from firmware_bridge.config import parse_device
from firmware_bridge.devices import DeviceError
from firmware_bridge.hub import Hub
from firmware_bridge.lsl import LslDevice, LslStream, parse_map, pylsl
from firmware_bridge.simulators.lsl import LslSensor
from firmware_bridge.simulators.rig import lsl_rig
from firmware_bridge.simulators.signals import SignalSource
from tests.test_bridge import _simulate

REPO = Path(__file__).resolve().parents[1]
WITHOUT_TORCH = REPO / "tests" / "helpers" / "without_torch.py"


class Taken:
    """A hub tap that keeps every batch a device delivered, per stream (what RawOutlets publishes)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {}

    def push(self, stream: str, samples: np.ndarray, t0: float) -> None:
        self.parts.setdefault(stream, []).append(np.array(samples))

    def samples(self, stream: str) -> np.ndarray:
        return np.concatenate(self.parts[stream])


def sent(sensor: LslSensor, stream: str) -> np.ndarray:
    """The samples of `stream` the sensor pushed, as pushed (float32): its columns after the counter and the
    streams before it."""
    first = int(sensor.counter)
    for s, n in sensor.layout.items():
        if s == stream:
            return np.concatenate(sensor.kept)[:, first:first + n]
        first += n
    raise KeyError(stream)


def test_lsl_streams_feed_the_runtime_bit_equal_and_a_lost_stream_comes_back_counted(fp32_bundle, datasets_root):
    from crossl_edge.runtime import EdgeModel
    from crossl_edge.runtime.stream import OK, StreamingClassifier

    model = EdgeModel(fp32_bundle, "litert")
    rig = lsl_rig(model.manifest, datasets_root, keep=True)
    by_name = {s.name.split("-")[1]: s for s in rig.lsl}
    assert sorted(by_name) == ["acc", "bvp", "eda"] and by_name["eda"].counter  # eda + temp share a 4 Hz stream
    assert by_name["eda"].device_arg.endswith(",map=eda:1+temp:2,seq=0")
    by_name["eda"].vanish(3.0, 5.0)  # the app publishing EDA and temperature quits for 2 s
    clock = ScaledClock(1.0)
    taken, preds, windows = Taken(), [], []
    stream = StreamingClassifier(model, hop_s=1.0)
    acc = stream.channels["acc"]

    def on_prediction(p) -> None:  # the ACC window the runtime encoded, and where it ends in the stream
        preds.append(p)
        end = acc.window_end(p.t)
        windows.append((end, acc.window(end, np.zeros((3, acc.spec.window), np.float32)).T.copy()))

    hub = Hub(rig.connect(clock), stream, None, clock, on_prediction=on_prediction, taps=[taken])

    _simulate(rig, clock, 12.5, hub=hub)
    ledger = rig.ledger()
    assert all(v["balanced"] for v in ledger.values()), ledger
    slow = hub.summary()["devices"]["lsl3"]
    assert slow["lost"]["sequence_gap"] > 0 and ledger["lsl3"]["lost"] == slow["lost"]["sequence_gap"]  # exact
    assert ledger["lsl"]["lost"] == ledger["lsl2"]["lost"] == 0
    states = [e.state for e in hub.events if e.device == "lsl3"]
    assert states[:2] == ["connecting", "connected"] and "disconnected" in states
    assert states.count("connected") == 2 and states.index("connected", 2) > states.index("disconnected")  # back
    assert by_name["eda"].vanished_count == 1

    # bit-equal: what the sensors pushed is what the bridge delivered, and what the runtime windows hold
    for name in ("acc", "bvp"):
        assert np.array_equal(taken.samples(name), sent(by_name[name], name))
    for name in ("eda", "temp"):  # the samples lost while the app was away are missing, the rest are exact
        got, pushed = taken.samples(name), sent(by_name["eda"], name)
        k = next(i for i in range(len(got)) if not np.array_equal(got[i], pushed[i]))
        assert np.array_equal(got[k:], pushed[k + len(pushed) - len(got):])
    end, window = windows[-1]  # one stretch since the start: its sample i is the i-th sample sent
    assert end >= acc.spec.window and np.array_equal(window, sent(by_name["acc"], "acc")[end - acc.spec.window:end])

    ok = [p for p in preds if p.state == OK]
    assert len(ok) >= 2  # a prediction a second once the first 10 s window is in
    assert all(set(p.present) == {"acc", "bvp"} for p in ok)  # EDA and temperature have no full window since


def test_predictions_and_raw_streams_go_out_over_lsl_from_the_command_without_torch(fp32_bundle, datasets_root, tmp_path):
    from crossl_edge.runtime.bundle import load_bundle

    lsl = pylsl()
    m = load_bundle(fp32_bundle).manifest
    rig = lsl_rig(m, datasets_root, keep=True)
    name = f"crossl-test-{os.getpid()}-{time.monotonic_ns()}"
    for sensor in rig.lsl:
        sensor.start(wait_for_consumer_s=60)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(WITHOUT_TORCH), "-m", "crossl_edge.run", "--bundle", str(fp32_bundle), "--backend",
             "litert", *(a for d in rig.device_args for a in ("--device", d)), "--hop", "1", "--duration", "13",
             "--lsl-out", name, "--lsl-raw", "--quiet"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)})
        found = lsl.resolve_byprop("name", name, 1, 30)
        assert found, proc.communicate(timeout=60)
        preds = lsl.StreamInlet(found[0], processing_flags=lsl.proc_clocksync)
        raw = lsl.StreamInlet(lsl.resolve_byprop("name", f"{name}-raw-acc", 1, 10)[0])
        info = preds.info(5)
        rows, stamps, raw_rows = [], [], []
        running = True
        while running:
            running = proc.poll() is None  # one more pull after the command ended: what it pushed last
            x, ts = preds.pull_chunk(0.2, 64, as_numpy=True)
            rows += list(x)
            stamps += list(ts)
            y, _ = raw.pull_chunk(0.0, 4096, as_numpy=True)
            raw_rows += list(y)
        out, err = proc.communicate(timeout=30)
    finally:
        for sensor in rig.lsl:
            sensor.stop()
    assert proc.returncode == 0, err[-3000:]
    assert info.type() == "Classifier" and info.nominal_srate() == lsl.IRREGULAR_RATE
    assert info.get_channel_labels() == ["p_rest", "p_stress", "present_acc", "present_bvp", "present_eda", "present_temp"]
    rows = np.array(rows)
    assert len(rows) >= 2, out
    assert np.allclose(rows[:, :2].sum(1), 1, atol=1e-5) and set(rows[-1, 2:]) == {1.0}  # all four present at the end
    assert np.allclose(np.diff(stamps), 1.0, atol=1e-3)  # a prediction a second, in LSL time
    assert abs(stamps[-1] - lsl.local_clock()) < 5
    # the bridged ACC, re-published, is what the sensor sent: a run of its samples, bit for bit
    raw_rows = np.array(raw_rows, np.float32)
    acc = sent(next(s for s in rig.lsl if "acc" in s.layout), "acc")
    # the sensor repeats values (a still wrist), so the run may start at any sample equal to the first one received
    starts = np.flatnonzero((acc == raw_rows[0]).all(1))
    assert len(raw_rows) > 100 and any(np.array_equal(raw_rows, acc[i:i + len(raw_rows)]) for i in starts)
    assert "lsl: delivered {'acc':" in out and "lost 0" in out


def test_lsl_device_strings_and_layouts_say_what_is_wrong():
    src = SignalSource(np.zeros((10, 3)), 50.0)
    sensor = LslSensor(f"imu-{time.monotonic_ns()}", "IMU", 50.0, {"acc": src}, counter=True)
    try:
        link = parse_device(f"lsl:{sensor.name},map=acc:1-3,seq=0")
        assert link.device.streams["acc"].channels == 3 and link.device.streams["acc"].rate == 50.0
        for text, message in [
            ("lsl:no-such-stream-here,timeout=0.2", "no LSL stream named or typed 'no-such-stream-here' found"),
            (f"lsl:{sensor.name}", "is no modality name; say which channels feed which modality, e.g. map=acc:0-2"),
            (f"lsl:{sensor.name},map=acc:1-4", r"channels '1-4' are not within 0..3"),
            (f"lsl:{sensor.name},map=acc:0-2,seq=0", "a channel is mapped twice"),
            (f"lsl:{sensor.name},map=acc:1-3,colour=red", "unknown options colour for lsl; known: map, seq"),
        ]:
            with pytest.raises(DeviceError, match=message):
                parse_device(text)
    finally:
        sensor.stop()
    assert parse_map(None, "EDA", 2, 0, "x") == {"eda": [1]}
    with pytest.raises(DeviceError, match="irregular rate"):
        LslDevice("lsl", LslStream("m", "Markers", 1, 0.0, "", "h", False), {"m": [0]})


def test_lsl_timestamp_gaps_and_counter_gaps_are_counted():
    """Without a counter a step in the timestamps is an estimated loss; with one the loss is exact, a counter that
    goes back is a restarted sender, not a loss."""
    stream = LslStream("s", "EDA", 2, 4.0, "id", "h", False)
    plain = LslDevice("lsl", LslStream("s", "EDA", 1, 4.0, "id", "h", False), {"eda": [0]})
    plain.connected()
    t = np.arange(8) / 4.0
    t[4:] += 0.75  # 3 samples missing between the 4th and the 5th
    out = plain.feed_chunk(np.arange(8, dtype=np.float32)[:, None], t, 100.0, 1000.0)
    assert [len(b.samples) for b in out] == [4, 4] and [b.contiguous for b in out] == [False, False]
    assert out[1].t0 == pytest.approx(1000.0 + 1.75) and plain.counters.lost["timestamp_gap_estimated"] == 3
    counted = LslDevice("lsl", stream, {"eda": [1]}, seq=0)
    counted.connected()
    x = np.c_[[0, 1, 2, 5, 6, 0, 1], np.arange(7)].astype(np.float32)
    out = counted.feed_chunk(x, np.arange(7) / 4.0, 0.0, 0.0)
    assert [len(b.samples) for b in out] == [3, 2, 2] and counted.counters.lost["sequence_gap"] == 2
    counted.connected()  # a reconnect: the counter still tells what was missed meanwhile
    counted.feed_chunk(np.array([[9, 0]], np.float32), np.array([5.0]), 0.0, 0.0)
    assert counted.counters.lost["sequence_gap"] == 2 + 7 and counted.counters.delivered["eda"] == 8
