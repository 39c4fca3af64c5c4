"""Every kind of sensor the package can train exports int8 to both backends by default, every conv int8 (issue 14).

A made-up BYO data set holds one modality of every kind in `spec.KINDS`, each at a rate and channel count such a
sensor has (EMG at 1 kHz, EDA and temperature at 4 Hz, a 4-channel orientation quaternion, ...). Two classes
differ in every modality (a level, a gain or a rhythm), so a few training steps give a confident model. The
default `export --int8` must then succeed on both backends with each backend's first plan: the .tflite's conv
operators must read int8 tensors, and the .pte's methods were checked by loading them in ExecuTorch's runtime
(the manifest records every plan tried, and a refused plan would say so), and for both backends the manifest must
count no conv whose weight reaches it in float (a plan that names Conv1d but cuts the conv-bn-relu pattern
leaves every conv fp32: ExecuTorch's did until 2026-12-05).

What export sees of a kind is the encoder it builds: kinds that give the same encoder structure (front end,
stem stride and kernel, block strides) lower to the same graph up to channel counts, so one sensor stands for
each structure (imu, acc and gyro at these rates share one), and a check asserts that every kind's structure
is among those exported. Exporting one program per kind would add about a third to the suite's slowest test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossl_edge.data.byo import save_byo_dataset, save_byo_recording
from crossl_edge.data.types import Recording
from crossl_edge.spec import KINDS, ModalitySpec

WINDOW_S = 4.0
#: kind -> (channels, Hz): one sensor of each kind, at a rate such a sensor streams
SENSORS = {"imu": (6, 50), "acc": (3, 32), "gyro": (3, 50), "emg": (4, 1000), "eda": (1, 4), "bvp": (1, 64),
           "ecg": (1, 130), "temp": (1, 4), "orientation": (4, 25), "other": (2, 10)}
QUICK = ["--quiet", "--threads", "2"]
#: the most-int8 encoder plan of each backend (LiteRT's names the norms and ReLUs, so that they fuse into the convs)
FIRST_PLAN = {"executorch": ["Conv2d", "BatchNorm2d", "ReLU", "Linear"], "litert": ["Conv2d", "BatchNorm2d", "ReLU", "Linear"]}


def structure(spec: ModalitySpec) -> tuple:
    """What the encoder of `spec` looks like to the exporter, channel counts aside."""
    from crossl_edge.models.encoder import EncoderConfig, ModalityEncoder

    enc = ModalityEncoder(spec, EncoderConfig())
    stem = enc.stem[0]
    return (enc.front is not None, stem.stride, stem.kernel_size, tuple(b.depthwise.stride for b in enc.blocks))


def every_kind_specs() -> list[ModalitySpec]:
    """One sensor of each kind; then one per encoder structure, the first kind that has it."""
    assert set(SENSORS) == set(KINDS)
    specs = [ModalitySpec(k, k, c, float(hz), int(WINDOW_S * hz)) for k, (c, hz) in SENSORS.items()]
    seen: dict[tuple, ModalitySpec] = {}
    for s in specs:
        seen.setdefault(structure(s), s)
    return list(seen.values())


def test_every_kind_is_represented_by_an_exported_structure():
    exported = {structure(s) for s in every_kind_specs()}
    for k, (c, hz) in SENSORS.items():
        assert structure(ModalitySpec(k, k, c, float(hz), int(WINDOW_S * hz))) in exported, k
    assert any(s.kind == "emg" for s in every_kind_specs())  # the front end ExecuTorch once refused


def write_every_kind(folder, subjects: int = 6, seconds: int = 80, seed: int = 0) -> list[ModalitySpec]:
    """Recordings that alternate rest and active every 10 s, told apart in every modality."""
    rng = np.random.default_rng(seed)
    specs = every_kind_specs()
    folder.mkdir()
    save_byo_dataset(folder, specs, ["rest", "active"], window_s=WINDOW_S, hop_s=2.0)
    for s in range(subjects):
        labels = (np.arange(seconds) // 10) % 2  # one label per second
        signals = {}
        for spec in specs:
            n = seconds * int(spec.sample_rate)
            t = np.arange(n) / spec.sample_rate
            active = labels[(t).astype(int)] == 1
            x = rng.normal(0.0, 0.2, (spec.channels, n)) + rng.normal(0.0, 0.3, (spec.channels, 1))
            if spec.kind == "emg":  # a zero-mean carrier whose amplitude is the muscle's activation
                x = rng.normal(0.0, 1.0, (spec.channels, n)) * np.where(active, 4.0, 1.0)
            elif spec.kind in ("eda", "temp"):  # slow levels
                x += np.where(active, 1.5, 0.0)
            else:  # a rhythm while active
                x += np.where(active, np.sin(2 * np.pi * min(2.0, spec.sample_rate / 8) * t), 0.0)
            signals[spec.name] = x.astype(np.float32)
        save_byo_recording(folder / f"p{s}.npz", Recording(f"p{s}", signals, {sp.name: sp.sample_rate for sp in specs},
                                                          labels.astype(np.int64), 1.0))
    return specs


def tflite_op_input_types(path) -> dict[str, list[tuple[str, str]]]:
    """{signature: [(operator, its first input's type) for every operator it runs]}, from the .tflite flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    builtin = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = {}
    for sig in model.signatureDefs:
        g = model.subgraphs[sig.subgraphIndex]
        ops = [(builtin[model.operatorCodes[op.opcodeIndex].builtinCode], op) for op in g.operators]
        out[sig.signatureKey.decode()] = [(name, types[g.tensors[op.inputs[0]].type]) for name, op in ops]
    return out


def test_a_model_with_every_sensor_kind_exports_all_int8_convs_to_both_backends(tmp_path):
    from crossl_edge import export, finetune, pretrain

    specs = write_every_kind(tmp_path / "data")
    run = tmp_path / "run"
    assert pretrain.main(["--run", str(run), "--dataset", "byo", "--data", str(tmp_path / "data"), "--epochs", "1",
                          "--batch-size", "32", *QUICK]) == 0
    assert finetune.main(["--run", str(run), "--label-fraction", "1.0", "--steps", "80", "--set-default", *QUICK]) == 0
    out = tmp_path / "bundle"
    assert export.main(["--run", str(run), "--int8", "--out", str(out), "--calibration-windows", "64", *QUICK]) == 0

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "int8"
    for backend in ("executorch", "litert"):
        parts = manifest["quantization"]["int8_parts"][backend]
        for s in specs:
            chosen = parts[f"enc_{s.name}"]["chosen"]
            assert chosen["int8"] == FIRST_PLAN[backend], (backend, s.name, parts[f"enc_{s.name}"])
            assert chosen["fp32_convs"] == 0, (backend, s.name, chosen)
            assert not any("refused" in t for t in parts[f"enc_{s.name}"]["tried"])
        assert manifest["verification"]["results"][backend]["failures"] == []
    ops = tflite_op_input_types(out / "model.tflite")
    convs = {sig: [t for name, t in o if "CONV" in name] for sig, o in ops.items()}
    for s in specs:
        assert convs[f"enc_{s.name}"] and set(convs[f"enc_{s.name}"]) == {"INT8"}, (s.name, convs[f"enc_{s.name}"])
    # every int8 ReLU is fused into its conv: a ReLU left as its own op on int8 tensors costs transposes around it
    relus = {sig: [t for name, t in o if "RELU" in name] for sig, o in ops.items()}
    assert all("INT8" not in relus[f"enc_{s.name}"] for s in specs), relus
