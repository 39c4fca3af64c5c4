"""Export to ExecuTorch and LiteRT, and the torch-free runtime, on a model trained on real Stress-Predict data.

The module trains a small model (1 CroSSL epoch, 60 fine-tuning steps) and exports it once as int8 (both
backends) and once as fp32 (LiteRT); every test reads those bundles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crossl_edge.runtime import BundleError, EdgeModel, InputError, load_bundle
from crossl_edge.runtime.bundle import AGGREGATE, sha256_file, write_manifest
from crossl_edge.runtime.stream import NO_MODALITY, OK, StreamingClassifier

REPO = Path(__file__).resolve().parents[1]
WITHOUT_TORCH = REPO / "tests" / "helpers" / "without_torch.py"
COMMON = ["--quiet", "--threads", "2"]


@pytest.fixture(scope="module")
def heldout(run_dir):
    """64 labelled held-out test windows: raw (what the runtime takes), normalised, and the fp32 network."""
    from crossl_edge.training.runs import load_net, load_raw, prepare_for_run, read_run

    info = read_run(run_dir)
    raw = load_raw(info.choice)
    prep = prepare_for_run(info, raw=raw)
    idx = prep.labelled(prep.test)[::73][:64]
    net = load_net(run_dir / "model.pt", info).eval()
    return {
        "raw": {s.name: raw.x[s.name][idx] for s in info.specs},
        "x": {s.name: torch.from_numpy(prep.ws.x[s.name][idx]) for s in info.specs},
        "y": raw.y[idx], "net": net, "names": tuple(s.name for s in info.specs),
        "subject": str(prep.ws.subject[idx[0]]),
    }


def _logits(model: EdgeModel, raw: dict, i: int, names) -> np.ndarray:
    return model.predict({n: raw[n][i] for n in names}).logits


def test_bundle_has_programs_checksums_and_verification(int8_bundle):
    m = json.loads((int8_bundle / "manifest.json").read_text())
    assert m["format"] == "crossl-edge-bundle/1" and m["precision"] == "int8"
    assert [s["name"] for s in m["modalities"]] == ["acc", "bvp", "eda", "temp"]
    assert m["class_names"] == ["rest", "stress"] and m["window_s"] == 10.0 and m["hop_s"] == 5.0
    for backend, file in (("executorch", "model.pte"), ("litert", "model.tflite")):
        e = m["backends"][backend]
        assert e["file"] == file and sha256_file(int8_bundle / file) == e["sha256"]
        assert set(e["programs"]) == {"enc_acc", "enc_bvp", "enc_eda", "enc_temp", AGGREGATE}
        result = m["verification"]["results"][backend]
        assert result["failures"] == [] and result["windows"] == 400
        assert result["argmax_agreement"] >= 0.90
        chosen = m["quantization"]["int8_parts"][backend]
        assert all("Linear" in c["chosen"]["int8"] for c in chosen.values())
    # LiteRT programs are full-integer where int8: the aggregator takes int8 tensors with their scales
    agg_in = m["backends"]["litert"]["programs"][AGGREGATE]["inputs"]
    assert agg_in["presence"]["dtype"] == "int8" and agg_in["presence"]["scale"] > 0
    assert m["tools"]["executorch"] == "1.4.1" and m["tools"]["litert-torch"] == "0.10.0"
    assert m["normalization"]["mean"]["acc"] and len(m["source"]["test_subjects"]) >= 5
    assert not (int8_bundle.parent / "bundle-int8.partial").exists()


def test_litert_file_writes_each_quantisation_once_and_computes_the_same(int8_bundle):
    """compact() shares identical quantisation vectors and tables and drops tensor names: the same model in
    fewer bytes. Its input here is the bundle's own file re-packed as the generated API writes it (every
    tensor with its own vectors, as litert-torch's output), names put back."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    from crossl_edge.export.litert_backend import compact

    shipped = (int8_bundle / "model.tflite").read_bytes()
    model = schema.ModelT.InitFromPackedBuf(shipped, 0)
    for g in model.subgraphs:
        for i, t in enumerate(g.tensors):
            t.name = f"module.path.of.tensor_{i}".encode()
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    plain = bytes(builder.Output())
    small = compact(plain)
    assert len(small) <= 0.9 * len(plain)
    # every distinct per-channel zero-point vector is stored once: read back, equal contents sit at one place
    where: dict[bytes, set[int]] = {}
    packed = schema.Model.GetRootAs(small, 0)
    for gi in range(packed.SubgraphsLength()):
        g = packed.Subgraphs(gi)
        for ti in range(g.TensorsLength()):
            q = g.Tensors(ti).Quantization()
            if q is not None and q.ZeroPointLength() > 1:
                position = q._tab.Vector(q._tab.Offset(10))  # noqa: SLF001  (field 3, zero_point)
                where.setdefault(q.ZeroPointAsNumpy().tobytes(), set()).add(position)
    per_channel = sum(1 for g in model.subgraphs for t in g.tensors
                      if t.quantization is not None and t.quantization.zeroPoint is not None and len(t.quantization.zeroPoint) > 1)
    assert per_channel > len(where) > 0 and all(len(p) == 1 for p in where.values())
    a, b = Interpreter(model_content=plain), Interpreter(model_content=small)
    rng = np.random.default_rng(0)
    for name in a.get_signature_list():
        ra, rb = a.get_signature_runner(name), b.get_signature_runner(name)
        assert {k: (v["dtype"], tuple(v["shape"])) for k, v in ra.get_input_details().items()} == \
            {k: (v["dtype"], tuple(v["shape"])) for k, v in rb.get_input_details().items()}
        for _ in range(5):
            ins = {k: (rng.integers(-128, 128, d["shape"]) if d["dtype"] == np.int8 else rng.normal(size=d["shape"])
                       ).astype(d["dtype"]) for k, d in ra.get_input_details().items()}
            got, want = rb(**ins), ra(**ins)
            assert all(np.array_equal(got[k], want[k]) for k in want), name


def test_every_backend_matches_pytorch_on_real_windows(int8_bundle, fp32_bundle, heldout):
    net, x, raw, names = heldout["net"], heldout["x"], heldout["raw"], heldout["names"]
    with torch.no_grad():
        ref = net(x).numpy()
        subset_keep = torch.tensor([[1.0, 0.0, 1.0, 0.0]]).expand(len(ref), 4)
        ref_subset = net(x, subset_keep).numpy()  # ACC and EDA only
    n = len(ref)
    fp32 = EdgeModel(fp32_bundle, "litert")
    got = np.stack([_logits(fp32, raw, i, names) for i in range(n)])
    assert np.abs(got - ref).max() < 1e-4
    got = np.stack([fp32.predict({"acc": raw["acc"][i], "eda": raw["eda"][i]}).logits for i in range(n)])
    assert np.abs(got - ref_subset).max() < 1e-4
    for backend in ("executorch", "litert"):
        model = EdgeModel(int8_bundle, backend)
        got = np.stack([_logits(model, raw, i, names) for i in range(n)])
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9, backend
        assert np.abs(got - ref).max() < 1.0, backend
        probs = model.predict({n_: raw[n_][0] for n_ in names}).probs
        assert probs.shape == (2,) and abs(probs.sum() - 1) < 1e-5


def test_runtime_loads_and_predicts_without_torch(int8_bundle, heldout, tmp_path):
    raw, names = heldout["raw"], heldout["names"]
    np.savez(tmp_path / "windows.npz", **raw)
    model = EdgeModel(int8_bundle, "litert")
    expected = np.stack([_logits(model, raw, i, names) for i in range(len(heldout["y"]))])
    script = tmp_path / "predict.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from crossl_edge.runtime import EdgeModel\n"
        f"m = EdgeModel({str(int8_bundle)!r})\n"
        f"w = np.load({str(tmp_path / 'windows.npz')!r})\n"
        "out = np.stack([m.predict({k: w[k][i] for k in m.names}).logits for i in range(len(w['acc']))])\n"
        f"np.save({str(tmp_path / 'logits.npy')!r}, out)\n"
        "assert 'torch' not in sys.modules\n"
        "print('backend', m.backend)\n"
        "from crossl_edge.runtime import BackendUnavailable\n"
        "try:\n"
        f"    EdgeModel({str(int8_bundle)!r}, 'executorch')\n"
        "except BackendUnavailable as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run([sys.executable, str(WITHOUT_TORCH), str(script)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backend litert" in proc.stdout
    assert "refused: backend 'executorch' is not installed" in proc.stdout  # it needs torch, which is not here
    np.testing.assert_array_equal(np.load(tmp_path / "logits.npy"), expected)
    # and the blocker really blocks: the same process cannot import torch
    proc = subprocess.run([sys.executable, str(WITHOUT_TORCH), "-m", "torch"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "blocked" in proc.stderr


def test_replay_command_end_to_end_on_a_real_recording(int8_bundle, heldout, tmp_path):
    subject = heldout["subject"]
    out = tmp_path / "predictions.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(WITHOUT_TORCH), "-m", "crossl_edge.run", "--bundle", str(int8_bundle),
         "--source", f"replay:stress-predict:{subject}", "--drop", "eda@100:200", "--stall", "bvp@300:400",
         "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "macro-F1" in proc.stdout and "pred=" in proc.stdout
    def strict(constant):  # NaN and Infinity are not JSON: another reader would refuse the file
        raise ValueError(f"{constant} in the predictions file")

    rows = [json.loads(line, parse_constant=strict) for line in out.read_text().splitlines()]
    assert len(rows) > 100
    assert all(r["running_macro_f1"] is None for r in rows[: next(i for i, r in enumerate(rows) if r["true"] is not None)])
    t = np.array([r["t"] for r in rows])
    assert np.allclose(np.diff(t), 5.0)
    present = {r["t"]: set(r["present"]) for r in rows}
    assert present[150.0] == {"acc", "bvp", "temp"}  # disconnected: absent at once, its encoder skipped
    assert "eda" not in present[205.0] and "eda" in present[215.0]  # back once a full window has arrived again
    assert "bvp" in present[300.0] and "bvp" not in present[305.0]  # stalled: absent after 2 s without samples
    assert "eda" not in rows[[r["t"] for r in rows].index(150.0)]["encoded"]
    scored = [r for r in rows if r["true"] is not None and r["state"] == OK]
    assert len(scored) > 100 and all(abs(sum(r["probs"].values()) - 1) < 1e-3 for r in scored)
    assert 0.0 <= rows[-1]["running_macro_f1"] <= 1.0


@pytest.fixture(scope="module")
def one_window_recordings(heldout, fp32_bundle, tmp_path_factory):
    """A BYO folder of 7 recordings of one held-out subject, each exactly one window long (as LIS gestures are)."""
    from crossl_edge.data.byo import save_byo_dataset, save_byo_recording
    from crossl_edge.data.types import Recording

    m = load_bundle(fp32_bundle).manifest
    folder = tmp_path_factory.mktemp("one-window")
    save_byo_dataset(folder, m.specs, ["rest", "stress"], window_s=m.window_s)
    for k, i in enumerate(range(0, 63, 9)):  # 7 held-out windows, labelled
        signals = {n: heldout["raw"][n][i] for n in heldout["names"]}
        labels = np.full(int(m.window_s), int(heldout["y"][i]))
        save_byo_recording(folder / f"gesture{k}.npz", Recording("G1", signals, {s.name: s.sample_rate for s in m.specs},
                                                                labels, 1.0))
    return folder


@pytest.mark.parametrize("hop", [None, "3", "7", "20"])
def test_replay_scores_every_recording_whatever_the_hop(fp32_bundle, one_window_recordings, hop, tmp_path, caplog):
    """Issue 16 stumble 3: with recordings exactly one window long, the 5 s pause between them put every second
    recording's only window off the prediction grid ("no sensor present", a gap warning per modality)."""
    from crossl_edge import run

    out = tmp_path / "p.jsonl"
    assert run.main(["--bundle", str(fp32_bundle), "--source", "replay:byo:G1", "--data", str(one_window_recordings),
                     "--backend", "litert", "--quiet", "--out", str(out), *(["--hop", hop] if hop else [])]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 7 and all(r["state"] == OK and r["true"] is not None for r in rows), rows  # one per recording
    assert [r["t"] for r in rows] == [10.0 + 15.0 * k for k in range(7)]  # each at its recording's window end
    assert "gap in the stream" not in caplog.text


def _stream_windows(stream: StreamingClassifier, raw: dict, names, i: int, t0: float = 0.0) -> None:
    for name in names:
        stream.push(name, raw[name][i].T, t0)


def test_only_the_encoders_of_present_modalities_run(int8_bundle, heldout):
    raw = heldout["raw"]
    model = EdgeModel(int8_bundle, "litert")
    for pattern in (("acc", "bvp", "eda", "temp"), ("acc",), ("eda", "temp"), ("bvp", "temp")):
        stream = StreamingClassifier(model)
        before = dict(model.calls)
        _stream_windows(stream, raw, pattern, 0)
        (p,) = stream.poll()
        ran = {k: v - before.get(k, 0) for k, v in model.calls.items() if v - before.get(k, 0)}
        assert ran == {**{f"enc_{n}": 1 for n in pattern}, AGGREGATE: 1}, pattern
        assert p.state == OK and p.present == pattern and p.encoded == pattern and p.t == 10.0
        # the streamed window is exactly the window the model sees
        np.testing.assert_allclose(p.probs, model.predict({n: raw[n][0] for n in pattern}).probs, atol=1e-6)


def test_embeddings_are_reused_until_the_window_moves_and_absence_is_reported(int8_bundle, heldout):
    raw = heldout["raw"]
    model = EdgeModel(int8_bundle, "litert")
    stream = StreamingClassifier(model, absent_after_s=6.0)
    _stream_windows(stream, raw, ("acc", "eda"), 0)
    assert [p.encoded for p in stream.poll()] == [("acc", "eda")]
    # 5 more seconds of ACC only: EDA's window has not moved, so its embedding is reused
    acc = raw["acc"][1].T
    stream.push("acc", acc[:160], 10.0)
    (p,) = stream.poll()
    assert p.present == ("acc", "eda") and p.encoded == ("acc",)
    assert stream.counters.encoder_reuses["eda"] == 1
    # ACC disconnects: at the next prediction EDA is stale too (no samples for more than 6 s), nothing is present
    stream.set_connected("acc", False)
    stream.push("temp", raw["temp"][0].T[:4], 20.5)
    (p,) = stream.poll(20.5)
    assert p.state == NO_MODALITY and p.probs is None and p.present == ()
    assert stream.counters.no_modality == 1 and stream.counters.disconnects == 1


def test_bad_stream_input_is_refused_or_counted_never_fatal(int8_bundle, heldout):
    raw = heldout["raw"]
    model = EdgeModel(int8_bundle, "litert")
    stream = StreamingClassifier(model)
    with pytest.raises(InputError, match=r"expected \[n, 3\]"):
        stream.push("acc", np.zeros((10, 2)), 0.0)
    with pytest.raises(InputError, match="unknown modality 'ecg'"):
        stream.push("ecg", np.zeros((10, 1)), 0.0)
    with pytest.raises(InputError, match="window of shape"):
        model.encode("acc", np.zeros((3, 100), dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        model.encode("eda", np.full((1, 40), np.nan, dtype=np.float32))
    acc = raw["acc"][0].T.copy()
    acc[5:8] = np.nan
    stream.push("acc", acc, 0.0)
    assert stream.counters.nonfinite_dropped == 3
    stream.push("acc", raw["acc"][1].T[:160], 10.0)
    first, second = stream.poll()
    # 3 samples (0.1 s) lost: bridged, not a gap, but the first window is 3 samples short until more arrive
    assert first.state == NO_MODALITY and second.state == OK and second.present == ("acc",)
    assert stream.counters.gaps == 0
    stream.push("acc", raw["acc"][2].T[:32], 2.0)  # goes back in time
    assert stream.counters.out_of_order_dropped == 32
    stream.push("acc", raw["acc"][1].T[:32], 30.0)  # 20 s later: a gap, the window must refill
    assert stream.counters.gaps == 1
    preds = stream.poll(31.0)
    assert preds and all(p.state == NO_MODALITY for p in preds[-2:])


def test_tampered_or_mismatched_bundles_are_refused(int8_bundle, tmp_path):
    bad = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bad)
    data = bytearray((bad / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bad / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match its manifest checksum"):
        load_bundle(bad)
    load_bundle(bad, backends=("executorch",))  # the untouched file alone still checks out
    shutil.copy(int8_bundle / "model.tflite", bad / "model.tflite")
    (bad / "model.pte").write_bytes((int8_bundle / "model.pte").read_bytes()[:-10])
    with pytest.raises(BundleError, match="altered or truncated"):
        EdgeModel(bad, "executorch")
    shutil.copy(int8_bundle / "model.pte", bad / "model.pte")
    # a manifest whose quantisation disagrees with the file it describes (as a faulty exporter would seal it)
    m = json.loads((int8_bundle / "manifest.json").read_text())
    m["backends"]["litert"]["programs"][AGGREGATE]["inputs"]["presence"]["scale"] *= 2
    write_manifest(bad, m)
    with pytest.raises(BundleError, match=rf"{bad / 'model.tflite'}: program aggregate, input .* in the file but"):
        EdgeModel(bad, "litert")
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bad)
    (bad / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(bad)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_executorch_loads_quietly_and_still_says_what_went_wrong(int8_bundle, tmp_path):
    """Its start-up chatter (torchao's CUDA kernels, cpuinfo probing, the thread pool) is filtered at the file
    descriptor, around the load only; what it says about a program it cannot load still reaches stderr, and the
    error quotes it."""
    bad = tmp_path / "bad"
    shutil.copytree(int8_bundle, bad)
    data = (bad / "model.pte").read_bytes()
    (bad / "model.pte").write_bytes(data[: len(data) // 2])  # a half-written program whose checksum was updated
    m = json.loads((bad / "manifest.json").read_text())
    m["backends"]["executorch"].update(sha256=sha256_file(bad / "model.pte"), bytes=len(data) // 2)
    write_manifest(bad, m)
    script = (
        "import numpy as np\n"
        "from crossl_edge.runtime import BundleError, EdgeModel\n"
        f"m = EdgeModel({str(int8_bundle)!r}, 'executorch')\n"
        "m.predict({s.name: np.zeros((s.channels, s.window), np.float32) for s in m.specs})\n"
        "print('ran')\n"
        "try:\n"
        f"    EdgeModel({str(bad)!r}, 'executorch')\n"
        "except BundleError as e:\n"
        "    print('refused:', e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran" in proc.stdout
    for noise in ("torchao/_C", "cpuinfo_utils.cpp", "threadpool.cpp", "register_constant"):
        assert noise not in proc.stderr, proc.stderr
    assert "[program.cpp" in proc.stderr  # ExecuTorch's own word on the broken program is not hidden
    assert f"refused: {bad / 'model.pte'} could not be loaded by ExecuTorch" in proc.stdout
    assert "(ExecuTorch said: [program.cpp" in proc.stdout


def test_a_method_executorch_refuses_is_named_and_export_keeps_the_bundle_as_rejected(
        int8_bundle, run_dir, tmp_path, monkeypatch, capsys):
    from executorch.runtime import Program

    from crossl_edge import export

    def refuse(self, name):  # how XNNPACK's refusal of a delegated graph (xnn_status_invalid_parameter) surfaces
        raise RuntimeError(f"Failed to load method {name}, error: 0x1")

    monkeypatch.setattr(Program, "load_method", refuse)
    with pytest.raises(BundleError, match=rf"{int8_bundle / 'model.pte'}: method 'enc_acc' could not be loaded"):
        EdgeModel(int8_bundle, "executorch")
    out = tmp_path / "b"
    assert export.main(["--run", str(run_dir), "--out", str(out), "--backends", "executorch",
                        "--calibration-windows", "16", "--verify-windows", "50", *COMMON]) == 1
    err = capsys.readouterr().err
    assert "method 'enc_acc' could not be loaded" in err and "NOT published" in err
    assert (tmp_path / "b.rejected" / "manifest.json").is_file()
    assert not out.exists() and not (tmp_path / "b.partial").exists()


def test_commands_explain_user_errors(run_dir, int8_bundle, tmp_path, capsys):
    from crossl_edge import export, run

    assert export.main(["--run", str(tmp_path / "none"), *COMMON]) == 2
    assert "make demo" in capsys.readouterr().err
    assert export.main(["--run", str(run_dir), "--checkpoint", str(tmp_path / "x.pt"), *COMMON]) == 2
    assert "no classifier" in capsys.readouterr().err
    assert export.main(["--run", str(run_dir), "--backends", "onnx", *COMMON]) == 2
    assert "executorch, litert" in capsys.readouterr().err
    assert run.main(["--bundle", str(tmp_path / "none"), "--source", "replay:stress-predict:S04"]) == 2
    assert "crossl_edge.export" in capsys.readouterr().err
    from crossl_edge.__main__ import main as crossl_main

    assert crossl_main(["run", "--bundle", str(tmp_path / "none"), "--source", "replay:stress-predict:S04"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run.main(["--bundle", str(int8_bundle), "--source", "live:x"]) == 2
    assert "replay:<dataset>:<subject>" in capsys.readouterr().err
    assert run.main(["--bundle", str(int8_bundle), "--source", "replay:stress-predict:S99", "--quiet"]) == 2
    assert "no recording of 'S99'" in capsys.readouterr().err
    assert run.main(["--bundle", str(int8_bundle), "--source", "replay:stress-predict:S04", "--drop", "ecg@1:2"]) == 2
    assert "modalities are acc, bvp, eda, temp" in capsys.readouterr().err
    assert run.main(["--bundle", str(int8_bundle), "--source", "replay:stress-predict:S04",
                     "--backend", "tflite-runtime"]) == 2
    assert "not installed" in capsys.readouterr().err


def test_an_interrupted_export_leaves_no_partial_bundle(run_dir, tmp_path):
    """Issue 16 stumble 6: a failed export left `<out>.partial/` behind. Ctrl-C while the programs are lowered
    (a real interrupt of a real export) removes it, says so, and publishes nothing."""
    import signal
    import time

    out = tmp_path / "bundle"
    partial = tmp_path / "bundle.partial"
    proc = subprocess.Popen([sys.executable, "-m", "crossl_edge.export", "--run", str(run_dir), "--out", str(out),
                             "--backends", "litert", "--verify-windows", "50", "--threads", "1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not partial.is_dir() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert partial.is_dir(), "the export never created its staging folder"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert f"the half-written {partial} was removed; no bundle was published" in err
    assert not partial.exists() and not out.exists()


def test_outputs_are_dequantised_and_softmaxed_as_the_formulas_say():
    """The runtime's table lookup for int8 outputs and its Python-float softmax are shortcuts (fewer numpy calls
    per window): they must give (stored - zero_point) * scale for every byte, and the softmax of any logits."""
    from crossl_edge.runtime.bundle import TensorIO
    from crossl_edge.runtime.model import _Fetch, softmax

    stored = np.arange(-128, 128, dtype=np.int8).reshape(1, 2, 128)
    for scale, zero_point in ((0.0131, -4), (0.0253, 3), (1.7, 127)):
        t = TensorIO("out", (1, 2, 128), "int8", scale, zero_point)
        want = np.multiply(np.subtract(stored, np.float32(zero_point), dtype=np.float32), np.float32(scale))[0]
        got = _Fetch(t)(stored)
        assert got.dtype == np.float32 and got.shape == (2, 128)
        np.testing.assert_array_equal(got, want)
    with pytest.raises(BundleError, match="uint8"):  # the table is int8's: the manifest refuses other types
        TensorIO.from_dict({"name": "out", "shape": [1, 4], "dtype": "uint8", "scale": 0.1, "zero_point": 0})
    rng = np.random.default_rng(0)
    for logits in [rng.normal(size=k).astype(np.float32) * s for k in (1, 2, 7) for s in (1.0, 50.0)] + [
        np.array([1000.0, -1000.0, 999.0], np.float32)
    ]:
        e = np.exp(logits.astype(np.float64) - logits.max())
        got = softmax(logits)
        assert got.dtype == np.float32 and got.shape == logits.shape
        np.testing.assert_allclose(got, e / e.sum(), rtol=1e-6, atol=1e-30)
