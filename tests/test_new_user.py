"""A new user's own data set, from CSV files to predictions on a replay, with nothing but the README (issue 16).

The CSV files are made up here: IMU (accelerometer + gyroscope) and 4 EMG channels at 100 Hz, a class name per
row, 8 people. The README's own snippet turns them into a BYO folder, and the README's own commands (with small
budgets added and an fp32 export, so the whole path takes about a minute) pretrain, fine-tune, fit the references,
evaluate, export and replay, in a fresh folder, with CROSSL_EDGE_DATA unset: only pretraining is told where the data is.
Along the way the mistakes a new user makes are made, and each error must say what to do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
CLASSES = ["rest", "grip", "wave"]
RATE = 100


def readme_block(after: str, lang: str) -> str:
    """The first ```lang block after the text `after` in the README."""
    return re.search(re.escape(after) + r".*?```" + lang + r"\n(.*?)```", README, re.S).group(1)


def readme_commands() -> dict[str, list[str]]:
    """The README's BYO commands by module (crossl_edge.<verb>), as argument lists, comments dropped."""
    out = {}
    for line in readme_block("only the first needs to be told where the data is", "sh").splitlines():
        args = shlex.split(line.split("#")[0])
        assert args[:2] == ["python", "-m"], line
        out[args[2].split(".")[-1]] = args[3:]
    return out


def write_csvs(folder: Path, subjects: int = 8, seconds: int = 36, seed: int = 0) -> None:
    """One CSV per person: 12 s of each class in turn, the classes told apart by a wrist movement (IMU) and a
    muscle's envelope (EMG), with noise and per-person gains."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    t = np.arange(seconds * RATE) / RATE
    for s in range(subjects):
        label = np.array(CLASSES)[(t // 12).astype(int) % 3]
        gain = rng.uniform(0.7, 1.3)
        imu = rng.normal(0, 0.05, (len(t), 6))
        imu[:, 2] += 1.0  # gravity
        wave = label == "wave"
        imu[wave, 0] += gain * np.sin(2 * np.pi * 2.0 * t[wave])
        imu[wave, 4] += 30 * gain * np.cos(2 * np.pi * 2.0 * t[wave])
        emg = rng.normal(0, 0.02, (len(t), 4)) * np.where(label == "grip", 8 * gain, 1.0)[:, None]
        header = "acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z,emg_1,emg_2,emg_3,emg_4,label"
        rows = [",".join(f"{v:.5f}" for v in (*imu[i], *emg[i])) + f",{label[i] if i % 500 else ''}" for i in range(len(t))]
        (folder / f"p{s}_day1.csv").write_text(header + "\n" + "\n".join(rows) + "\n")


def call(main, argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_new_user_takes_a_csv_data_set_from_files_to_predictions(tmp_path, monkeypatch, capsys):
    from crossl_edge import baseline, evaluate, export, finetune, pretrain, run

    monkeypatch.delenv("CROSSL_EDGE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    write_csvs(tmp_path / "csv")
    # the README's CSV -> BYO snippet, run as the user runs it (its own Python, in the folder holding csv/)
    snippet = readme_block("From a CSV", "python")
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(list((tmp_path / "my_data").glob("*.npz"))) == 8
    cmd = readme_commands()
    assert list(cmd) == ["pretrain", "finetune", "baseline", "evaluate", "export", "run"]
    quick = ["--quiet", "--threads", "2"]

    # mistakes first: each error names what to do
    code, _, err = call(pretrain.main, ["--run", "runs/mine", "--dataset", "byo", *quick], capsys)
    assert code == 2 and "--data" in err and "CROSSL_EDGE_DATA" in err
    code, _, err = call(pretrain.main, [*cmd["pretrain"], "--batch-size", "4096", *quick], capsys)
    assert code == 2 and "lower --batch-size" in err
    assert not Path("runs/mine/run.json").exists()  # a refused pretraining writes nothing (its retry is not refused)
    code, _, err = call(finetune.main, cmd["finetune"] + quick, capsys)
    assert code == 2 and "python -m crossl_edge.pretrain --run runs/mine" in err

    code, out, err = call(pretrain.main, [*cmd["pretrain"], "--epochs", "1", "--batch-size", "32", *quick], capsys)
    assert code == 0, err
    run_json = json.loads(Path("runs/mine/run.json").read_text())
    assert run_json["data_source"] == {"folder": str((tmp_path / "my_data").resolve()), "from": "--data my_data"}
    code, _, err = call(export.main, ["--run", "runs/mine", *quick], capsys)
    assert code == 2 and "--set-default" in err  # no model yet: says how to make one

    # fine-tuning: no --data (run.json knows), and it says its budget
    code, out, err = call(finetune.main, [*cmd["finetune"], "--steps", "40", *quick], capsys)
    assert code == 0, err
    assert re.search(r"finetune: \d+ labelled windows, up to 40 optimiser steps", out)
    made = json.loads(Path("runs/mine/model.json").read_text())
    assert made["steps"] <= 40

    # the reference on the same split and the same labelled windows
    code, out, err = call(baseline.main, cmd["baseline"] + ["--quiet"], capsys)
    assert code == 0, err
    metrics = json.loads(Path("runs/mine/metrics.json").read_text())
    ref = metrics["baseline_stats_lr_0.1"]
    assert ref["labelled_windows"] == made["labelled_windows"] and ref["test_windows"] == metrics["model.pt"]["test_windows"]
    assert set(ref["macro_f1"]) == {"imu+emg", "imu", "emg"}
    code, out, err = call(baseline.main, [*cmd["baseline"], "--method", "minirocket", "--kernels", "84", "--quiet"], capsys)
    assert code == 0, err
    code, out, err = call(evaluate.main, cmd["evaluate"] + quick, capsys)
    assert code == 0, err
    header = next(line for line in out.splitlines() if line.startswith("modalities present"))
    assert header.split()[2:] == ["model.pt", "baseline_minirocket_0.1", "baseline_stats_lr_0.1"]  # one table
    assert re.search(r"^imu\+emg +[01]\.\d{3} +[01]\.\d{3} +[01]\.\d{3}$", out, re.M)
    code, _, err = call(evaluate.main, [*cmd["evaluate"], "--model", "model_probe.pt", *quick], capsys)
    assert code == 2 and "python -m crossl_edge.finetune --run runs/mine" in err

    # export (fp32 LiteRT only: int8 calibration and lowering double the test's time) finds the data through
    # run.json, and says how to replay
    assert "--int8" in cmd["export"]
    code, out, err = call(export.main, [*(a for a in cmd["export"] if a != "--int8"), "--backends", "litert", *quick],
                          capsys)
    assert code == 0, err
    replay = re.search(r"run it: python -m crossl_edge\.run (.*?)   \(a held-out subject", out).group(1).split()
    assert replay[:2] == ["--bundle", "export/mine-fp32"] and replay[-2:] == ["--data", str((tmp_path / "my_data").resolve())]
    subject = replay[3].split(":")[-1]
    assert subject in run_json["split"]["test"]
    # the README's replay command, <subject> filled in; and without --data, the error says to pass it
    argv = [a.replace("<subject>", subject).replace("mine-int8", "mine-fp32") for a in cmd["run"]]
    code, _, err = call(run.main, [a for a in argv[:-2]] + ["--quiet"], capsys)
    assert code == 2 and "--data" in err
    code, out, err = call(run.main, argv + ["--out", "p.jsonl", "--quiet"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in Path("p.jsonl").read_text().splitlines()]
    assert len(rows) == 35 and all(r["state"] == "ok" for r in rows)  # 36 s: a prediction each second after the first window
    assert sum(r["true"] is not None for r in rows) >= 25  # windows across a change of class (or an unlabelled row) are not scored
    assert re.search(r"35 predictions \(0 with no sensor present\), \d+ scored against labels", out)

    # the data moved: the recorded place no longer holds it, and the error says to pass --data
    (tmp_path / "my_data").rename(tmp_path / "moved")
    code, _, err = call(evaluate.main, cmd["evaluate"] + quick, capsys)
    assert code == 2 and "--data" in err
    code, _, err = call(evaluate.main, [*cmd["evaluate"], "--data", "moved", *quick], capsys)
    assert code == 0, err
