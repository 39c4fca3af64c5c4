"""`python -m benchmarks` in quick mode on the tiny bundles: every file, every claimed row, streaming and warm
modes, end to end, the tflite-runtime rows from an environment of their own, and rows that cannot run here
reported as skipped with the reason, never as zeros (also without torch, as on a Pi)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks.suite.floor import program_macs
from benchmarks.suite.latency import config_labels

REPO = Path(__file__).resolve().parents[1]
NO_TORCH_SITE = REPO / "tests" / "helpers" / "no_torch_site"
QUICK = ["--quick", "--runs", "40", "--repeats", "2"]
FILES = ("report.md", "results.json", "machine.json", "latency.csv", "skip_curve.csv", "sizes.csv", "latency.png",
         "skip_curve.png")


def rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_results(int8_bundle, fp32_bundle, tmp_path_factory):
    """The tflite-runtime rows come from a second worker in "another environment": this Python, with a stand-in
    `tflite_runtime` (ai-edge-litert's interpreter under that name: the same API) on its path, since the real
    one needs numpy<2. That exercises the plumbing; the committed results measured the real package."""
    shim = tmp_path_factory.mktemp("tflite_shim")
    (shim / "tflite_runtime").mkdir()
    (shim / "tflite_runtime" / "__init__.py").write_text("")
    (shim / "tflite_runtime" / "interpreter.py").write_text("from ai_edge_litert.interpreter import Interpreter  # noqa\n")
    out = tmp_path_factory.mktemp("bench") / "results"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")])))
        assert bench.main([*QUICK, "--bundle", str(int8_bundle), "--bundle", str(fp32_bundle), "--out", str(out),
                           "--bridge-s", "4", "--tflite-python", sys.executable]) == 0
    return out


def test_quick_mode_writes_every_file_and_replaces_old_results_whole(quick_results):
    for name in FILES:
        assert (quick_results / name).stat().st_size > 0, name
    assert (quick_results / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the repository's accuracy results become one curve and one heat map per data set and protocol
    assert len(list(quick_results.glob("accuracy_*.png"))) == len(list(quick_results.glob("missing_*.png"))) >= 2
    assert not quick_results.with_name(quick_results.name + ".partial").exists()
    machine = json.loads((quick_results / "machine.json").read_text())
    assert machine["cores"] >= 1 and machine["versions"]["python"] and machine["cpu"]


def test_latency_table_has_every_claimed_row_measured_or_skipped_never_zero(quick_results):
    table = rows(quick_results / "latency.csv")
    claimed = [c[0] for c in config_labels()]
    assert [(r["threads"], r["configuration"]) for r in table] == [(t, c) for t in ("1", "default") for c in claimed]
    by = {(r["threads"], r["configuration"]): r for r in table}
    for t in ("1", "default"):
        for label in ("PyTorch eager fp32", "ExecuTorch int8", "LiteRT int8", "LiteRT fp32", "tflite-runtime int8",
                      "tflite-runtime fp32"):
            r = by[(t, label)]
            assert r["status"] == "measured" and float(r["median_us"]) > 0, r
            assert int(r["runs"]) == 2 * 40 and float(r["p99_us"]) >= float(r["median_us"])
            assert float(r["repeat_min_us"]) <= float(r["repeat_max_us"]) and float(r["warm_median_us"]) > 0
            if label != "PyTorch eager fp32":  # the programs alone, and end to end through the streaming classifier
                # (no order between them asserted: 40 runs at default threads on a loaded machine do not keep one)
                assert float(r["programs_only_us"]) > 0 and float(r["end_to_end_us"]) > 0, r
                assert float(r["end_to_end_x_programs"]) == pytest.approx(
                    float(r["end_to_end_us"]) / float(r["programs_only_us"]), rel=0.01)
        # the fp32 test bundle is LiteRT only
        assert by[(t, "ExecuTorch fp32")]["status"] == "skipped"
        assert "no executorch program" in by[(t, "ExecuTorch fp32")]["reason"]
        # tflite-runtime: measured in its own environment, carried to PyTorch through LiteRT, side by side there
        for prec in ("int8", "fp32"):
            r = by[(t, f"tflite-runtime {prec}")]
            assert r["environment"] == "tflite-runtime venv (numpy<2)" and r["speedup_via"] == f"LiteRT {prec}"
            assert float(r["speedup_vs_pytorch"]) > 1
    assert float(by[("1", "LiteRT int8")]["speedup_vs_pytorch"]) > 1
    report = (quick_results / "report.md").read_text()
    assert "## Targets" in report and "LiteRT int8 >= 20x faster than PyTorch eager" in report
    assert "ExecuTorch int8 >= 10x faster than PyTorch eager" in report
    assert "end to end per window within 2x of the programs alone" in report and "### Warm, one thread" in report
    assert "| tflite-runtime int8 |" in report and "via LiteRT int8" in report and "skipped: backend" not in report


def test_streaming_timing_calls_every_configuration_once_per_window_in_changing_order():
    from benchmarks.suite.timing import run_streaming

    calls = []
    configs = {k: (lambda k=k: calls.append(k)) for k in "abcd"}
    out = run_streaming(configs, n=50, warmup=2)
    assert all(out[k]["runs"] == 50 for k in configs) and len(calls) == 4 * 52
    windows = [calls[i:i + 4] for i in range(0, len(calls), 4)]
    assert all(sorted(w) == list("abcd") for w in windows)  # once each per window
    assert len({tuple(w) for w in windows}) > 5  # and not always in the same order


def test_skip_curve_sizes_floor_and_bridge(quick_results, int8_bundle, fp32_bundle):
    r = json.loads((quick_results / "results.json").read_text())
    names = r["modalities_key"].split("+")
    skip = rows(quick_results / "skip_curve.csv")
    measured = {"ExecuTorch int8", "LiteRT int8", "LiteRT fp32"}
    assert {x["configuration"] for x in skip} == measured
    assert len(skip) == len(measured) * (2 ** len(names) - 1)
    assert all(float(x["median_us"]) > 0 and int(x["encoders"]) == x["sensors_present"].count("+") + 1 for x in skip)
    sizes = rows(quick_results / "sizes.csv")
    assert [(x["precision"], x["backend"]) for x in sizes] == [("int8", "executorch"), ("int8", "litert"), ("fp32", "litert")]
    assert int(sizes[1]["bytes"]) == (int8_bundle / "model.tflite").stat().st_size
    macs = program_macs((fp32_bundle / "model.tflite").read_bytes())
    assert r["floor"]["macs_all"] == sum(macs.values()) > 0 and r["floor"]["floor_us"] > 0
    assert r["footprint"]["torch_imported"] is False and r["footprint"]["max_rss_mb"] > 0
    assert all(p["frames_per_s"] > 0 for p in r["bridge"]["parse"])
    lat = r["bridge"]["latency"]
    assert lat["balanced"] and not lat["died"] and lat["latency_ms"]["n"] >= 1, lat


def test_macs_are_counted_from_the_program_ops(fp32_bundle, run_dir):
    """The .tflite count equals the network's own conv and linear layers counted in torch."""
    import torch

    from crossl_edge.training.runs import load_net, read_run

    net = load_net(run_dir / "model.pt", read_run(run_dir)).eval()
    counted = []

    def hook(mod, inp, out):
        if isinstance(mod, torch.nn.Conv1d):
            counted.append(out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0])
        elif isinstance(mod, torch.nn.Linear):
            counted.append(out.numel() * mod.in_features)

    macs = program_macs((fp32_bundle / "model.tflite").read_bytes())
    for name, enc in net.encoders.items():
        spec = next(s for s in net.specs if s.name == name)
        counted.clear()
        handles = [m.register_forward_hook(hook) for m in enc.modules()]
        with torch.no_grad():
            enc(torch.zeros(1, spec.channels, spec.window))
        for h in handles:
            h.remove()
        assert sum(counted) == macs[f"enc_{name}"], name


def test_runs_without_torch_and_says_which_rows_it_skipped(int8_bundle, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(NO_TORCH_SITE), str(REPO)])}
    out = tmp_path / "pi"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--runs", "20", "--repeats", "1",
                           "--bundle", str(int8_bundle), "--out", str(out), "--bridge-s", "0", "--no-tflite-runtime"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    by = {(r["threads"], r["configuration"]): r for r in rows(out / "latency.csv")}
    assert by[("1", "PyTorch eager fp32")]["status"] == "skipped"
    assert "torch is not installed" in by[("1", "PyTorch eager fp32")]["reason"]
    assert "not installed" in by[("1", "ExecuTorch int8")]["reason"]
    assert by[("1", "LiteRT int8")]["status"] == "measured" and by[("1", "LiteRT int8")]["speedup_vs_pytorch"] == ""
    assert "no fp32 bundle" in by[("1", "LiteRT fp32")]["reason"]
    assert by[("1", "tflite-runtime int8")]["reason"] == "left out (--no-tflite-runtime)"
    report = (out / "report.md").read_text()
    assert "LiteRT int8 >= 20x faster than PyTorch eager: not measured here (torch is not installed" in report
    assert json.loads((out / "results.json").read_text())["footprint"]["torch_imported"] is False


def test_a_missing_or_tampered_bundle_is_a_clear_error(fp32_bundle, tmp_path, capsys):
    assert bench.main(["--quick", "--bundle", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "no bundle at" in capsys.readouterr().err and not (tmp_path / "r").exists()
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(fp32_bundle, bad)
    data = bytearray((bad / "model.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / "model.tflite").write_bytes(bytes(data))
    assert bench.main(["--quick", "--bundle", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "r").exists()
