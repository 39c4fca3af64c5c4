"""The bridge end to end: simulated sensors speaking the devices' bytes through a real pty (pyserial) and the
real bleak client API, real recorded signals, injected faults, and the hub into the runtime.

Every live test checks the ledger: each sample a simulated sensor sent is either delivered or counted as
lost. Speeds are scaled (ScaledClock) so a minute of sensor time takes a few seconds.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossl_edge.data.byo import load_byo
from crossl_edge.live import ScaledClock
from firmware_bridge.config import parse_device, parse_devices
from firmware_bridge.devices import BitalinoDevice, CxfDevice, DeviceError, PolarDevice, StreamInfo
from firmware_bridge.hub import Hub
from firmware_bridge.protocols import bitalino, cxf, polar
from firmware_bridge.recorder import Recorder
from firmware_bridge.resample import Resampler
from firmware_bridge.simulators.ble import SimulatedBleBackend, bitalino_peripheral, polar_peripheral
from firmware_bridge.simulators.pty import PtySimulator
from firmware_bridge.simulators.rig import Rig, bundle_rig, soak_rig
from firmware_bridge.simulators.sensors import BitalinoModel, Faults, PolarModel, bitalino_adc_eda
from firmware_bridge.simulators.signals import SignalSource, dataset_signal

REPO = Path(__file__).resolve().parents[1]
WITHOUT_TORCH = REPO / "tests" / "helpers" / "without_torch.py"


class Collect:
    """A sink that keeps what links report (stands where the hub is, for link-level tests)."""

    def __init__(self) -> None:
        self.batches, self.states = [], []

    def link_state(self, device, state, detail=""):
        self.states.append((device.name, state))

    def deliver(self, device, batches):
        self.batches.extend(batches)

    def samples(self, stream: str) -> np.ndarray:
        return np.concatenate([b.samples for b in self.batches if b.stream == stream])


def _simulate(rig: Rig, clock: ScaledClock, seconds: float, *, sink: Collect | None = None, links=None,
              hub: Hub | None = None) -> None:
    """Start the rig's simulators at clock time 0, run the hub (or the links, into sink) for `seconds`, end the
    streams cleanly (Rig.quiesce) and stop the simulators."""

    async def run_links() -> None:
        tasks = [asyncio.create_task(link.run(sink)) for link in links]
        await asyncio.sleep(seconds)
        await rig.quiesce()
        for link in links:
            link.stop()
        await asyncio.wait(tasks, timeout=3)
        for t in tasks:
            assert t.done() and t.exception() is None

    async def main() -> None:
        clock.reset()
        rig.start()
        try:
            await (hub.run(seconds, before_stop=rig.quiesce) if hub is not None else run_links())
        finally:
            await rig.stop()

    if hub is None and links is None:
        links = rig.connect(clock)
    asyncio.run(main())


@pytest.fixture
def eda_s04(datasets_root):
    return dataset_signal("stress-predict", "S04", "eda", datasets_root)


def _adc_twin(src: SignalSource, n: int, rate: float) -> np.ndarray:
    """The ADC codes a BITalino replaying `src` sends first: a fresh copy of the source, same rounding."""
    twin = SignalSource(src.data, src.rate, src.transform)
    return np.clip(np.rint(twin.take(n, rate)[:, 0]), 0, 1023)


# ---- serial through a real pty ------------------------------------------------------------------------
def test_bitalino_over_a_pty_delivers_the_exact_signal(eda_s04, tmp_path):
    eda_s04.transform = bitalino_adc_eda
    clock = ScaledClock(1.0)
    rig = Rig()
    rig.ptys.append(PtySimulator(BitalinoModel({3: eda_s04}), tmp_path / "bitalino", clock))
    rig.models["bitalino"] = (rig.ptys[0].model, {"eda": "A3"})
    rig.device_args.append(f"bitalino:{tmp_path / 'bitalino'},rate=100,A3=eda:eda")
    sink = Collect()

    _simulate(rig, clock, 1.5, sink=sink)
    got = sink.samples("eda")[:, 0]
    assert len(got) > 100  # 1.5 s at 100 Hz, less the start
    expected = bitalino.eda_us(_adc_twin(eda_s04, len(got), 100))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert rig.ledger()["bitalino"] == {"sent": len(got), "delivered": len(got), "lost": 0, "balanced": True}
    assert sink.states[:2] == [("bitalino", "connecting"), ("bitalino", "connected")]


def test_hub_counts_serial_faults_stalls_and_an_unplug_exactly(datasets_root, tmp_path):
    clock = ScaledClock(1.0)
    rig = soak_rig(tmp_path, clock, datasets_root, seed=3)
    rig.peripherals = []  # keep the serial ones: BITalino EMG at 1 kHz and the CXF EDA board, with byte faults
    rig.device_args = [a for a in rig.device_args if not a.startswith("polar")]
    del rig.models["polar"]
    bit_pty = next(p for p in rig.ptys if p.path.name == "bitalino")
    cxf_pty = next(p for p in rig.ptys if p.path.name == "cxf-board")
    faults = bit_pty.faults = Faults(flip=0.1, drop=0.1, dup=0.1, seed=3)  # about every third 10 ms chunk
    bit_pty.unplug(1.5, 2.3)
    cxf_pty.stall(0.8, 1.6)  # sends nothing for 0.8 s, then catches up
    hub = Hub(rig.connect(clock), None, None, clock, stall_after_s=0.5)  # no bundle: counting and presence only

    _simulate(rig, clock, 4.0, hub=hub)
    ledger = rig.ledger()
    assert all(v["balanced"] for v in ledger.values()), ledger
    bit = hub.summary()["devices"]["bitalino"]
    assert sum(faults.counts.values()) >= 10
    assert bit["crc_errors"] + bit["sequence_errors"] > 0 and bit["resyncs"] > 0 and bit["lost"]["sequence_gap"] > 0
    assert bit["reconnects"] == 1 and bit_pty.unplugged_count == 1
    events = [(e.device, e.state) for e in hub.events]
    bit_states = [s for d, s in events if d == "bitalino"]
    assert bit_states[:2] == ["connecting", "connected"] and bit_states.count("connected") == 2  # back after the unplug
    assert "disconnected" in bit_states and bit_states[-1] == "disconnected"
    cxf_states = [s for d, s in events if d == "cxf"]
    assert "stalled" in cxf_states and cxf_states.index("resumed") > cxf_states.index("stalled")
    assert ledger["bitalino"]["delivered"] > 2000  # about 3 s of the 4 at 1 kHz


def test_cxf_board_over_ble_nordic_uart(eda_s04):
    from firmware_bridge.simulators.ble import nus_peripheral
    from firmware_bridge.simulators.sensors import CxfModel

    clock = ScaledClock(1.0)
    model = CxfModel({2: (SignalSource(eda_s04.data, eda_s04.rate), 40.0)}, max_samples=8)
    per = nus_peripheral("C0:FF:EE:00:00:02", model, clock=clock)
    rig = Rig(peripherals=[per], models={"cxf": (model, {"eda": 2})}, device_args=["cxf-ble:C0:FF:EE:00:00:02,2=eda:1@40"])
    sink = Collect()

    _simulate(rig, clock, 1.0, sink=sink)
    got = sink.samples("eda")[:, 0]
    assert len(got) >= 30 and rig.ledger()["cxf"]["balanced"] and rig.links[0].device.counters.frames > 5
    np.testing.assert_allclose(got, SignalSource(eda_s04.data, eda_s04.rate).take(len(got), 40.0)[:, 0], rtol=1e-6)


# ---- BLE through bleak's own client, with the simulated backend ---------------------------------------
def test_polar_over_ble_reconnects_and_restarts_its_stream(datasets_root):
    clock = ScaledClock(1.0)
    acc = dataset_signal("stress-predict", "S04", "acc", datasets_root)
    model = PolarModel(acc, per_notification=10)
    link = parse_device("polar:A0:9E:1A:00:00:07,acc=100", clock, backend=SimulatedBleBackend)
    link.backoff.first_s, link.backoff.max_s = 0.1, 0.2
    per = polar_peripheral("A0:9E:1A:00:00:07", model, clock=clock).out_of_range(0.6, 0.9).out_of_range(1.4, 1.6)
    sink = Collect()

    _simulate(Rig(peripherals=[per], models={"polar": (model, {"acc": "acc"})}), clock, 2.5, sink=sink, links=[link])
    c = link.device.counters
    assert per.drops == 2 and c.reconnects == 2
    assert c.delivered["acc"] == model.sent["acc"] > 100 and not c.lost
    states = [s for _, s in sink.states]
    assert states.count("connected") == 3 and "unavailable" in states  # refused while out of range
    twin = SignalSource(acc.data, acc.rate)
    first = sink.batches[0].samples
    np.testing.assert_allclose(first, np.rint(twin.take(len(first), 100) * 1000) / 1000, atol=1e-6)  # milli-g steps
    # stamps: 100 Hz samples on the device clock map to host times 10 ms apart
    b0, b1 = sink.batches[0], sink.batches[1]
    assert abs((b1.t0 - b0.t0) - len(b0.samples) / 100) < 0.02


def test_bitalino_ble_frames_span_20_byte_notifications(eda_s04):
    clock = ScaledClock(1.0)
    copies = {a: SignalSource(eda_s04.data, eda_s04.rate, bitalino_adc_eda) for a in (1, 2, 3, 4)}
    model = BitalinoModel(copies)  # 4 channels: 7-byte frames
    seen: list[int] = []
    per = bitalino_peripheral("20:16:07:18:00:01", model, clock=clock)
    link = parse_device("bitalino-ble:20:16:07:18:00:01,rate=1000,A1=a:raw,A2=b:raw,A3=c:raw,A4=d:raw", clock,
                        backend=SimulatedBleBackend)
    sink = Collect()
    feed = link.device.feed

    def spy(data, arrival, source=None):
        seen.append(len(data))
        return feed(data, arrival, source)

    link.device.feed = spy

    _simulate(Rig(peripherals=[per]), clock, 1.0, sink=sink, links=[link])
    assert max(seen) == 20 and any(n % 7 for n in seen)  # frames cut across notifications
    n = len(sink.samples("a"))
    assert n > 500 and link.device.counters.crc_errors == 0
    twin = _adc_twin(copies[1], n, 1000)
    for name in "abcd":
        np.testing.assert_array_equal(sink.samples(name)[:, 0], twin)


def test_ble_links_connect_one_at_a_time(datasets_root):
    clock = ScaledClock(1.0)
    acc = dataset_signal("stress-predict", "S04", "acc", datasets_root)
    addresses = [f"A0:9E:1A:00:01:0{i}" for i in range(3)]
    pers = [polar_peripheral(a, PolarModel(SignalSource(acc.data, acc.rate)), clock=clock) for a in addresses]
    links = parse_devices([f"polar:{a}" for a in addresses], clock, backend=SimulatedBleBackend)
    assert [lk.device.name for lk in links] == ["polar", "polar2", "polar3"]
    SimulatedBleBackend.max_connecting = 0
    sink = Collect()

    _simulate(Rig(peripherals=pers), clock, 0.8, sink=sink, links=links)
    assert SimulatedBleBackend.max_connecting == 1
    assert sum(1 for _, s in sink.states if s == "connected") == 3


# ---- the hub and the runtime ----------------------------------------------------------------------------
def test_hub_skips_a_lost_sensor_and_records_what_the_bundle_uses(fp32_bundle, datasets_root, tmp_path):
    from crossl_edge.runtime import EdgeModel
    from crossl_edge.runtime.stream import StreamingClassifier

    model = EdgeModel(fp32_bundle, "litert")
    clock = ScaledClock(20.0)
    rig = bundle_rig(model.manifest, tmp_path, clock, datasets_root)
    assert set(rig.models) == {"polar", "bitalino", "cxf"}  # ACC by BLE, EDA by BITalino, BVP + TEMP by a CXF board
    rig.peripherals[0].out_of_range(25.0, 45.0)
    stream = StreamingClassifier(model)
    recorder = Recorder(tmp_path / "rec", list(model.manifest.specs), min_s=10)
    preds = []
    hub = Hub(rig.connect(clock), stream, recorder, clock, on_prediction=preds.append)

    _simulate(rig, clock, 70.0, hub=hub)
    ledger = rig.ledger()
    assert all(v["balanced"] for v in ledger.values()), ledger
    # at 20x several PMD frames are due per tick: each must still be its own notification
    assert all(not lk.device.counters.bad_notifications and not lk.device.counters.lost for lk in hub.links)
    ok = [p for p in preds if p.state == "ok"]
    assert len(ok) >= 8
    with_acc = [p for p in ok if "acc" in p.present]
    without = [p for p in ok if "acc" not in p.present and p.t > 30]
    assert with_acc and without, [(p.t, p.present) for p in preds]
    assert all("acc" not in p.encoded for p in without)  # its encoder is skipped while the strap is away
    assert any(p.t > 55 and "acc" in p.present for p in ok)  # and back after the reconnect (and a full window)
    assert stream.counters.disconnects >= 1
    states = [(e.device, e.state) for e in hub.events]
    assert ("polar", "disconnected") in states and states.count(("polar", "connected")) == 2
    # the recording loads as an unlabelled BYO data set with the bundle's modalities at their rates
    recs, specs, classes = load_byo(tmp_path / "rec")
    assert classes == () and {s.name for s in specs} == {s.name for s in model.manifest.specs}
    assert recs and all(r.duration() >= 10 for r in recs)
    lengths = [(r.signals[s.name].shape[1], r.duration() * s.sample_rate) for r in recs for s in model.manifest.specs]
    assert all(n == expected for n, expected in lengths), lengths  # every stream covers the same time
    # and a recording replays as a source
    from crossl_edge import run as run_command

    assert run_command.main(["--bundle", str(fp32_bundle), "--source", "replay:byo:live", "--data",
                             str(tmp_path / "rec"), "--backend", "litert", "--quiet"]) == 0


def test_simulate_command_runs_without_torch(fp32_bundle, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(WITHOUT_TORCH), "-m", "crossl_edge.run", "--bundle", str(fp32_bundle), "--simulate",
         "--speed", "25", "--duration", "90", "--record", str(tmp_path / "rec")],
        capture_output=True, text=True, cwd=REPO, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "--device polar:" in out and "--device bitalino:" in out and "--device cxf:" in out
    assert "[polar] disconnected" in out and "[bitalino] disconnected" in out
    assert "pred=" in out and "UNBALANCED" not in out and "sent = delivered + lost" in out
    assert list((tmp_path / "rec").glob("*.npz"))


# ---- configuration and the pieces -------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("fitbit:/dev/x", "kind one of"),
    ("bitalino", "expected <kind>:<address>"),
    ("bitalino:/dev/rfcomm0,rate=500", "1, 10, 100, 1000"),
    ("bitalino:/dev/rfcomm0,A7=emg:emg", "unknown options A7"),
    ("bitalino:/dev/rfcomm0,A1=emg:ecg", "sensor kind 'ecg'"),
    ("polar:AA:BB:CC:DD:EE:FF,acc=30", "25, 50, 100 or 200"),
    ("cxf:/dev/ttyACM0,1=eda", "<stream>:<channels>@<rate>"),
    ("cxf:/dev/ttyACM0", "at least one modality id"),
    ("cxf:/dev/ttyACM0,1=eda:1@10,colour=red", "unknown options colour"),
])
def test_bad_device_strings_say_what_is_wrong(text, message):
    with pytest.raises(DeviceError, match=message):
        parse_device(text)


def test_hub_refuses_a_stream_that_does_not_fit_the_bundle(fp32_bundle):
    from crossl_edge.runtime import EdgeModel
    from crossl_edge.runtime.stream import StreamingClassifier

    stream = StreamingClassifier(EdgeModel(fp32_bundle, "litert"))
    with pytest.raises(ValueError, match="3 channels; the bundle's eda has 1"):
        Hub([parse_device("cxf:/dev/null,1=eda:3@10")], stream)
    with pytest.raises(ValueError, match="comes from two devices"):
        Hub(parse_devices(["cxf:/dev/a,1=eda:1@10", "cxf:/dev/b,1=eda:1@10"]), stream)


@pytest.mark.parametrize("rate_in, rate_out", [(100, 32), (1000, 200), (10, 4), (4, 10), (64, 64), (130, 64)])
def test_resampler_follows_a_slow_sine_across_chunks(rate_in, rate_out):
    rng = np.random.default_rng(0)
    r = Resampler(rate_in, rate_out)
    n = rate_in * 20
    t = np.arange(n) / rate_in
    x = np.sin(2 * np.pi * 0.3 * t)[:, None]
    ys, ts, i = [], [], 0
    while i < n:
        k = int(rng.integers(1, max(2, rate_in // 3)))
        y, t0 = r.push(x[i:i + k], 5.0 + i / rate_in + rng.normal(0, 2e-4))  # clock jitter on the stamps
        ys.append(y)
        ts.append(t0 + np.arange(len(y)) / rate_out)
        i += k
    y, tt = np.concatenate(ys)[:, 0], np.concatenate(ts) - 5.0
    assert abs(len(y) - n * rate_out / rate_in) <= 2
    assert np.abs(np.diff(tt) - 1 / rate_out).max() < 1e-9  # one grid, jitter not passed on
    assert np.abs(y - np.sin(2 * np.pi * 0.3 * tt))[3:-3].max() < 0.03
    assert r.restarts == 0


def test_resampler_keeps_a_hole_a_hole():
    r = Resampler(100, 50)
    y1, t1 = r.push(np.zeros((100, 1)), 0.0)
    y2, t2 = r.push(np.ones((100, 1)), 1.3, contiguous=False)  # 0.3 s lost
    assert r.restarts == 1 and t2 == pytest.approx(1.3 + 0.005) and y2.min() == 1.0


def test_recorder_splits_at_holes_and_writes_loadable_byo(tmp_path):
    from crossl_edge.spec import ModalitySpec

    specs = [ModalitySpec("acc", "acc", 3, 32.0, 320, units="g"), ModalitySpec("eda", "eda", 1, 4.0, 40, units="uS")]
    rec = Recorder(tmp_path, specs, min_s=5)
    for k in range(40):  # 40 s of both, with eda missing 20.0-21.0 s
        rec.push("acc", np.full((32, 3), k, np.float32), float(k))
        if k != 20:
            rec.push("eda", np.full((4, 1), k, np.float32), float(k))
    files = rec.flush()
    assert len(files) == 2
    recs, _, _ = load_byo(tmp_path)
    assert [r.duration() for r in recs] == [20.0, 19.0]
    assert recs[1].signals["acc"][0, 0] == 21 and recs[1].signals["eda"][0, 0] == 21
    assert rec.counters.dropped_short == 32 and rec.counters.samples_written == 39 * 36


def test_polar_timestamp_gap_counts_the_missing_samples():
    dev = PolarDevice("h10", acc="acc", acc_rate=100)
    dev.connected()
    x = np.zeros((10, 3))
    for k, t_last in enumerate([0.09, 0.19, 0.49]):  # 20 samples missing before the third frame
        dev.feed(polar.encode_notification(polar.ACC, int(1e12 + t_last * 1e9), x), 100.0 + k * 0.1, polar.DATA)
    assert dev.counters.lost["timestamp_gap_estimated"] == 20 and dev.counters.delivered["acc"] == 30


def test_cxf_frame_cut_by_a_disconnect_is_counted():
    dev = CxfDevice("b", {1: (StreamInfo("eda", 1, 10.0, "uS"), 1.0)})
    dev.connected()
    frame = cxf.encode_frame(1, 1, 0, 0, np.ones((5, 1), np.float32))
    dev.feed(frame + frame[:cxf.HEADER.size + 3], 1.0)
    dev.disconnected(1.1)
    assert dev.counters.delivered["eda"] == 5 and dev.counters.lost["cut_by_disconnect"] == 5
    dev.connected()
    dev.feed(frame[:10], 2.0)
    dev.disconnected(2.1)
    assert dev.counters.cut_unknown == 1  # the header itself was cut: its size cannot be known


def test_device_counters_add_up_across_reconnects():
    dev = BitalinoDevice("b", {1: ("emg", "emg")}, 1000)
    frames = bitalino.encode_frames(np.arange(8) % 16, np.zeros((8, 4), np.int64), np.full((8, 1), 512))
    corrupt = bytearray(frames)
    corrupt[4] ^= 0x01  # a bit of frame 1 (3-byte frames): a CRC error
    for _ in range(2):
        dev.connected()  # a fresh parser each time
        dev.feed(bytes(corrupt), 1.0)
        dev.disconnected(1.1)
    c = dev.counters
    assert c.reconnects == 1 and c.bytes_in == 2 * len(frames) and c.crc_errors == 2 and c.resyncs == 2


def test_ble_connect_lock_works_in_a_second_event_loop():
    from firmware_bridge.links import BleLink

    async def connect_like():
        async with BleLink._lock():
            await asyncio.sleep(0.01)

    async def three_at_once():
        await asyncio.gather(*(connect_like() for _ in range(3)))

    asyncio.run(three_at_once())
    asyncio.run(three_at_once())  # a lock bound to the first loop would raise here


# ---- simulator fidelity and hostile bytes (issue 15) ------------------------------------------------------------
def test_bitalino_simulator_answers_state_pwm_trigger_and_battery_over_a_pty(tmp_path):
    import serial

    clock = ScaledClock(1.0)
    sim = PtySimulator(BitalinoModel({1: SignalSource(np.full((10, 1), 512.0), 1000.0)}), tmp_path / "b", clock).start()
    try:
        port = serial.Serial(str(tmp_path / "b"), 115200, timeout=1.0)
        # battery threshold 30, PWM 0x05 (a value byte that also reads as a start command), trigger O1
        port.write(bytes([30 << 2, 0xA3, 0x05, 0xB3 | 1 << 2, 0x0B]))
        reply = port.read(16)
        assert len(reply) == 16 and not sim.model.streaming and sim.model.pwm == 5
        frame = np.frombuffer(reply, np.uint8).reshape(1, 16)
        assert bitalino.crc4(frame)[0] == reply[-1] & 0x0F  # the vendor's check of the state reply
        assert reply[14] == 30 and (reply[15] >> 4) == 0b0010  # threshold; I1 I2 O1 O2
        port.write(bytes([0xC3, 0x05]))  # 1000 Hz, start A1
        data = port.read(300)
        _, digital, analog = bitalino.decode_frames(np.frombuffer(data[:297], np.uint8).reshape(-1, 3), 1)
        assert (analog[:, 0] == 512).all() and (digital[:, 2] == 1).all()  # O1 shows in the frames
        port.write(b"\x00")
        port.close()
    finally:
        sim.stop()


def test_polar_simulator_settings_ecg_rate_checks_and_a_second_start_through_bleak():
    from bleak import BleakClient

    async def main():
        per = polar_peripheral("A0:9E:1A:00:00:0E", PolarModel(SignalSource(np.zeros((2, 3)), 1.0))).start()
        replies, data = [], []
        try:
            async with BleakClient("A0:9E:1A:00:00:0E", backend=SimulatedBleBackend) as client:
                assert (await client.read_gatt_char(polar.CONTROL_POINT))[1] & 0b101 == 0b101  # ECG and ACC
                await client.start_notify(polar.CONTROL_POINT, lambda _c, d: replies.append(bytes(d)))
                await client.start_notify(polar.DATA, lambda _c, d: data.append(bytes(d)))
                for request in (b"\x01\x00", b"\x01\x02",
                                polar.start_request(polar.ACC, {polar.SAMPLE_RATE: 7, polar.RESOLUTION: 16}),
                                polar.start_request(polar.ECG, {polar.SAMPLE_RATE: 130, polar.RESOLUTION: 14}),
                                polar.start_request(polar.ECG, {polar.SAMPLE_RATE: 130, polar.RESOLUTION: 14})):
                    await client.write_gatt_char(polar.CONTROL_POINT, request, response=True)
                await asyncio.sleep(1.3)
        finally:
            await per.stop()
        return replies, data

    replies, data = asyncio.run(main())
    assert replies[0] == bytes.fromhex("f0 01 00 00 00 00 01 82 00 01 01 0e 00")  # ECG: 130 Hz, 14 bit
    assert replies[1].startswith(bytes.fromhex("f0 01 02 00 00 00 04 19 00 32 00 64 00 c8 00"))  # ACC 25-200 Hz
    assert replies[2][3] == polar.STATUS_INVALID_SAMPLE_RATE and replies[3][3] == 0
    assert replies[4][3] == polar.STATUS_ALREADY_IN_STATE
    frames = [polar.parse_notification(d) for d in data]
    assert frames and all(f.measurement == polar.ECG and len(f.samples) == 73 for f in frames)


def test_polar_ecg_streams_through_the_bridge():
    clock = ScaledClock(4.0)
    model = PolarModel(SignalSource(np.zeros((2, 3)), 1.0))
    per = polar_peripheral("A0:9E:1A:00:00:0F", model, clock=clock)
    link = parse_device("polar:A0:9E:1A:00:00:0F,acc=0,ecg=ecg", clock, backend=SimulatedBleBackend)
    sink = Collect()

    _simulate(Rig(peripherals=[per], models={"polar": (model, {"ecg": "ecg"})}), clock, 6.0, sink=sink, links=[link])
    got = sink.samples("ecg")
    assert len(got) > 300 and link.device.counters.delivered["ecg"] == model.sent["ecg"]
    assert link.device.streams["ecg"].rate == 130.0 and 0.5 < got.max() < 2.0  # R peaks of about 1.1 mV


def test_a_bitalino_with_the_wrong_channel_count_is_reported_and_other_links_go_on(eda_s04, tmp_path):
    clock = ScaledClock(1.0)
    copies = {a: SignalSource(eda_s04.data, eda_s04.rate, bitalino_adc_eda) for a in (1, 2, 3)}
    rig = Rig()
    rig.ptys.append(PtySimulator(BitalinoModel(copies, fixed_inputs=(1, 2, 3)), tmp_path / "wrong", clock))
    rig.ptys.append(PtySimulator(BitalinoModel({3: eda_s04}), tmp_path / "right", clock))
    rig.models["bitalino"] = (rig.ptys[0].model, {"a": "A1", "b": "A2", "c": "A3"})
    rig.models["bitalino2"] = (rig.ptys[1].model, {"eda": "A3"})
    # the host asks the first for 6 channels; it streams 3, as a board whose user configured the bridge wrongly
    rig.device_args += [f"bitalino:{tmp_path / 'wrong'},rate=1000,A1=a:raw,A2=b:raw,A3=c:raw,A4=d:raw,A5=e:raw,A6=f:raw",
                        f"bitalino:{tmp_path / 'right'},rate=100,A3=eda:eda"]
    sink = Collect()

    _simulate(rig, clock, 2.5, sink=sink)
    wrong = rig.links[0].device
    assert ("bitalino", "misconfigured") in sink.states and not wrong.counters.delivered
    assert wrong.counters.diagnosis.endswith("the byte pattern fits 3 channels"), wrong.counters.diagnosis
    ledger = rig.ledger()
    assert not ledger["bitalino"]["balanced"]  # its bytes are no frames of what it was configured for: reported
    assert ledger["bitalino2"]["balanced"] and len(sink.samples("eda")) > 150
